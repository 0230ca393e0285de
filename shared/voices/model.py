"""A voice as the API shows it, and as a store keeps it (with its owner and its vector)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field

from shared.core.domain import ID_PATTERN
from shared.core.errors import InvalidVoiceName

VOICE_NAME_MAX = 64
_NAME_FORBIDDEN = set("<>&[]")  # would break the VTT voice tag (<v name>) or SRT's [name] prefix
_LABEL = re.compile(r"SPEAKER_\d+", re.IGNORECASE)  # an unnamed speaker's label: a name must not pass for one
VECTOR_DIM = 256


class Voice(BaseModel):
    voice_id: str = Field(pattern=ID_PATTERN)
    name: str = Field(description="what transcripts call the speaker whose voice matches")
    created_at: datetime
    updated_at: datetime
    speech_s: float = Field(description="seconds of speech the voiceprint was made from")
    samples: int = Field(description="how many samples were averaged into it")


class VoiceList(BaseModel):
    voices: list[Voice]


@dataclass(frozen=True)
class StoredVoice:
    """A voice with what only the server sees: whose it is, and the voiceprint (unit float32 vector)."""

    voice: Voice
    owner: str
    vector: np.ndarray

    def vector_bytes(self) -> bytes:
        return np.asarray(self.vector, np.float32).tobytes()

    @staticmethod
    def vector_from(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, np.float32).copy()


def checked_name(name: str | None) -> str:
    """A voice name every output format can carry, stripped: 1-64 printable characters, none of
    < > & [ ], and not an unnamed speaker's label (SPEAKER_00)."""
    name = (name or "").strip()
    if not name or len(name) > VOICE_NAME_MAX or not name.isprintable() or _NAME_FORBIDDEN & set(name):
        raise InvalidVoiceName(
            f"a voice name must be 1-{VOICE_NAME_MAX} printable characters without {' '.join(sorted(_NAME_FORBIDDEN))}"
        )
    if _LABEL.fullmatch(name):
        raise InvalidVoiceName(f"{name!r} is how unnamed speakers are labelled: choose a name")
    return name
