"""Domain types. They are the API schema too, so the OpenAPI document describes what really flows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, PrivateAttr, model_validator

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000

# Clip, job and live-session ids: 32 lowercase hex digits (uuid4().hex). ID_PATTERN is the JSON-schema
# form (OpenAPI, pydantic); is_id() the check (fullmatch: "$" with re.match let a trailing newline through).
ID_PATTERN = "^[0-9a-f]{32}$"
_ID = re.compile(r"[0-9a-f]{32}")


def is_id(value: str | None) -> bool:
    return bool(value) and _ID.fullmatch(value) is not None


class OutputFormat(str, Enum):
    json = "json"
    srt = "srt"
    vtt = "vtt"
    txt = "txt"
    rttm = "rttm"


class Task(str, Enum):
    transcribe = "transcribe"
    translate = "translate"


class SpeakerHints(BaseModel):
    """What the caller knows about the number of speakers. All optional."""

    num_speakers: int | None = Field(default=None, ge=1, le=32)
    min_speakers: int | None = Field(default=None, ge=1, le=32)
    max_speakers: int | None = Field(default=None, ge=1, le=32)

    @model_validator(mode="after")
    def _consistent(self) -> "SpeakerHints":
        lo, hi, n = self.min_speakers, self.max_speakers, self.num_speakers
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_speakers must not exceed max_speakers")
        if n is not None and ((lo is not None and n < lo) or (hi is not None and n > hi)):
            raise ValueError("num_speakers must lie within [min_speakers, max_speakers]")
        return self


class TranscribeOptions(BaseModel):
    """Everything a caller can ask of one transcription. Checked once where it enters (the API routes, the
    CLI, a batch input: shared.service.transcription.checked_options); the layers inside trust it."""

    diarize: bool = True
    speakers: SpeakerHints = Field(default_factory=SpeakerHints)
    language: str | None = Field(default=None, description="ISO 639-1 code; None detects it")
    task: Task = Task.transcribe
    word_timestamps: bool = False
    initial_prompt: str | None = None
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    voices: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="ids of the caller's enrolled voices (POST /api/voices) to name speakers with",
    )
    identify: bool = Field(default=False, description="name speakers with every voice the caller has enrolled")

    @property
    def identifies(self) -> bool:
        return self.diarize and (self.identify or bool(self.voices))


class Chunk(BaseModel):
    """A span of the clip cut out for transcription.

    [start, end] is the audio sent to Whisper; [keep_start, keep_end) is the part this chunk owns.
    Neighbours overlap a little; a word is kept by the chunks whose owned part it overlaps, and the
    copy a word straddling a cut leaves in both is dropped where the chunks are joined.
    """

    index: int
    start: float
    end: float
    keep_start: float
    keep_end: float
    speech: list[tuple[float, float]] = Field(default_factory=list, description="VAD speech regions inside")
    unsure: list[tuple[float, float]] = Field(
        default_factory=list,
        description="sound the VAD scored as silence (inside `speech` too): words heard only there need "
        "Whisper's own confidence",
    )
    pieces: list[tuple[float, float]] = Field(
        default_factory=list,
        description="clip spans whose samples, joined, are the chunk's audio (long pauses cut out); empty: [start, end]",
    )

    def spans(self) -> list[tuple[float, float]]:
        return self.pieces or [(self.start, self.end)]

    @property
    def duration(self) -> float:
        """Seconds of audio Whisper hears (pauses cut out do not count)."""
        return sum(b - a for a, b in self.spans())

    def to_clip_time(self, local: float) -> float:
        """A time in the chunk's audio -> the same moment in the clip."""
        done = 0.0
        for a, b in self.spans():
            if local <= done + (b - a):
                return a + max(local - done, 0.0)
            done += b - a
        return self.spans()[-1][1]

    def to_local_time(self, clip: float) -> float:
        """A clip time -> seconds into the chunk's audio (a moment cut out maps to where audio resumes)."""
        done = 0.0
        for a, b in self.spans():
            if clip <= b:
                return done + max(clip - a, 0.0)
            done += b - a
        return done

    def starting_at(self, clip: float) -> "Chunk":
        """The rest of this chunk from clip time `clip` on."""
        pieces = [(max(a, clip), b) for a, b in self.spans() if b > clip]
        return self.model_copy(update={"start": round(max(self.start, clip), 3), "pieces": pieces})


@dataclass(frozen=True, slots=True)
class Decode:
    """What faster-whisper reports about one of its segments (one decode of a chunk, or of part of one).

    Every word heard in that segment refers to the same object, so a batch's pickle carries it once.
    """

    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None
    speaker: str | None = None
    # Not part of the API: the Whisper segment the word was heard in and the word's own token ids, for
    # the statistics of the segments it ends up in. Private attributes survive pickling and model_copy.
    _decode: Decode | None = PrivateAttr(default=None)
    _tokens: tuple[int, ...] = PrivateAttr(default=())

    def heard_in(self, decode: Decode, tokens: tuple[int, ...]) -> "Word":
        self._decode, self._tokens = decode, tokens
        return self

    @property
    def decode(self) -> Decode | None:
        return self._decode

    @property
    def tokens(self) -> tuple[int, ...]:
        return self._tokens


class TranscribedSegment(BaseModel):
    """What Whisper says about a stretch of one chunk, in absolute clip time (each word refers to the
    Whisper segment it was heard in: see Word.decode)."""

    start: float
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)


class ChunkTranscript(BaseModel):
    chunk: Chunk
    language: str
    segments: list[TranscribedSegment]


class Turn(BaseModel):
    """A stretch of time in which one speaker talks (a diarization output)."""

    start: float
    end: float
    speaker: str


class Segment(BaseModel):
    """Words of one speaker, cut at speaker changes, sentence ends and long pauses.

    The decoder statistics are faster-whisper's, for the Whisper segments this segment's words were
    heard in: one per decode of a VAD chunk (up to 30 s of audio), or of a stretch of one decoded again.
    A segment's words may come from more than one of them, and one of them may be split into several
    segments. All are null when no word carries them.
    """

    speaker: str | None = None
    speaker_id: str | None = Field(
        None, description="the enrolled voice the speaker was identified as (its voice_id; a per-request "
        "reference's name): null for a speaker nobody enrolled, or without identification",
    )
    speaker_confidence: float | None = Field(
        None, ge=-1.0, le=1.0, description="cosine similarity of the speaker's voice to that enrolled voice "
        "(names are given from VOICE_MATCH_THRESHOLD up)",
    )
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = Field(
        None,
        description="mean token log-probability of the Whisper segments the words were heard in, each weighted "
        "by the number of this segment's tokens from it; below -1 often means a wrong transcription",
    )
    compression_ratio: float | None = Field(
        None,
        description="the zlib compression ratio (bytes / compressed bytes) of the text of each Whisper segment "
        "the words were heard in, the highest of them; above 2.4 usually means the decoder repeated itself",
    )
    no_speech_prob: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="the highest probability of no speech that Whisper gave the Whisper segments the words "
        "were heard in",
    )
    temperature: float | None = Field(
        None, ge=0.0, description="the highest sampling temperature those Whisper segments were decoded with"
    )
    tokens: list[int] | None = Field(
        None, description="the token ids of this segment's words as Whisper decoded them, in order: they decode to "
        "`text` (with its leading space)",
    )  # fmt: skip


@dataclass(frozen=True)
class VoicePrint:
    """One voice, as the speaker encoder hears it: the unit mean of its windows' d-vectors over the
    speech found in some spans of a clip, and how many seconds of speech that was."""

    vector: "np.ndarray"  # float32, unit length (zeros: no speech)
    speech_s: float
    voices: int = 1  # how many speakers diarization hears in it (counted when asked)


class Transcript(BaseModel):
    segments: list[Segment]
    language: str
    duration: float
    speakers: list[str] = Field(default_factory=list)


class ClipInfo(BaseModel):
    clip_id: str
    filename: str | None = None
    content_type: str | None = None
    size_bytes: int
    duration: float
    sample_rate: int | None = None
    channels: int | None = None
    codec: str | None = None
    created_at: datetime
