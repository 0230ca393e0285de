"""Speaker diarization behind one port, with two adapters.

- `embedded`: Silero VAD + resemblyzer speaker embeddings + clustering. Offline, no token; the default.
- `pyannote`: pyannote.audio's pipeline (PYANNOTE_MODEL from the hub with HUGGINGFACE_TOKEN, or a local
  config/checkpoint path). Needs pyannote.audio installed (the diarizer image, `make test-pyannote`).

DIARIZER=auto picks pyannote when PYANNOTE_MODEL is set, else embedded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from shared.core.domain import SpeakerHints, Turn

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.media.pcm import AudioSource


class Diarizer(Protocol):
    name: str

    def diarize(self, audio: "AudioSource | np.ndarray", hints: SpeakerHints | None = None) -> list[Turn]:
        """16 kHz mono float32 (a reference or an array) in; speaker turns out, sorted by start,
        labelled SPEAKER_00, SPEAKER_01..."""
        ...


def build_diarizer(settings: "Settings") -> Diarizer:
    kind = settings.resolved_diarizer
    if kind == "pyannote":
        from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

        return PyannoteDiarizer.from_settings(settings)
    from shared.pipeline.diarization.embedded import EmbeddedDiarizer

    return EmbeddedDiarizer.from_settings(settings)


def speaker_label(index: int) -> str:
    return f"SPEAKER_{index:02d}"
