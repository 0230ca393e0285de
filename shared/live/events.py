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
    speaker: str
    item: int


@dataclass(frozen=True)
class FinalUtterance:
    item: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    speaker: str | None
    language: str


@dataclass(frozen=True)
class ItemFailed:
    item: int
    code: str
    message: str


Event = SpeechStarted | SpeechStopped | PartialWords | SpeakerFound | FinalUtterance | ItemFailed
