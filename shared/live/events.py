"""What a live session reports, in stream time (seconds since the session's first sample).

`item` numbers the session's utterances from 0. Partials carry only words not reported before; a final
carries the utterance's whole transcript from the accurate model and replaces its partials.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.core.domain import Word


@dataclass(frozen=True)
class SpeechStarted:
    item: int
    start: float


@dataclass(frozen=True)
class SpeechStopped:
    item: int
    end: float


@dataclass(frozen=True)
class PartialWords:
    item: int
    words: tuple[Word, ...]


@dataclass(frozen=True)
class SpeakerFound:
    """A speaker heard for the first time, or a tracked speaker (`label`, its SPEAKER_xx) that an
    enrolled voice names from this utterance on (`speaker` is then the name, `speaker_id` the voice)."""

    speaker: str
    item: int
    speaker_id: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class FinalUtterance:
    item: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    speaker: str | None
    language: str
    speaker_id: str | None = None  # the enrolled voice that names the speaker (its voice_id)
    speaker_confidence: float | None = None  # the speaker's cosine similarity to that voice


@dataclass(frozen=True)
class ItemFailed:
    item: int
    code: str
    message: str


Event = SpeechStarted | SpeechStopped | PartialWords | SpeakerFound | FinalUtterance | ItemFailed
