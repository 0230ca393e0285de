"""The diarizer port: what every adapter offers, and how speakers are named."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from shared.core.domain import SpeakerHints, Turn

if TYPE_CHECKING:
    from shared.media.pcm import AudioSource


class Diarizer(Protocol):
    name: str

    def diarize(self, audio: "AudioSource | np.ndarray", hints: SpeakerHints | None = None) -> list[Turn]:
        """16 kHz mono float32 (a reference or an array) in; speaker turns out, sorted by start,
        labelled SPEAKER_00, SPEAKER_01..."""
        ...


def speaker_label(index: int) -> str:
    return f"SPEAKER_{index:02d}"
