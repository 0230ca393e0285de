"""What a live session reports, in stream time (seconds since the session's first sample).

`item` numbers the session's utterances from 0. Partials carry only stable words not reported before
(never retracted) and the newest decode's tentative tail (which replaces the item's previous tentative
words); a final carries the utterance's whole transcript from the accurate model and replaces its
partials. A final's text never changes; its speaker may, by a later SpeakerUpdate.
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
    words: tuple[Word, ...]  # newly stable: two decodes in a row agree on them
    tentative: tuple[Word, ...] = ()  # the newest decode's words after the stable ones (may change)


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
class SpeakerUpdate:
    """Later audio showed that earlier finals (`items`) were labelled wrongly: they are `speaker` now, not
    `previous` (two running speakers turned out to be one voice, or a piece sounds more like another
    speaker). `speaker_id`/`speaker_confidence` as in FinalUtterance when `speaker` is an enrolled name."""

    items: tuple[int, ...]
    speaker: str
    previous: str
    speaker_id: str | None = None
    speaker_confidence: float | None = None


@dataclass(frozen=True)
class ItemFailed:
    item: int
    code: str
    message: str


Event = SpeechStarted | SpeechStopped | PartialWords | SpeakerFound | FinalUtterance | SpeakerUpdate | ItemFailed
