"""Query parameters shared by every transcription route, turned into TranscribeOptions."""

from __future__ import annotations

from fastapi import Query
from pydantic import ValidationError

from shared.domain import OutputFormat, SpeakerHints, Task, TranscribeOptions
from shared.errors import InvalidParameter


def speaker_hints(
    num_speakers: int | None = Query(None, ge=1, le=32, description="exact number of speakers, if known"),
    min_speakers: int | None = Query(None, ge=1, le=32, description="at least this many speakers"),
    max_speakers: int | None = Query(None, ge=1, le=32, description="at most this many speakers"),
) -> SpeakerHints:
    try:
        return SpeakerHints(num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers)
    except ValidationError as exc:
        raise InvalidParameter("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def transcribe_options(
    diarize: bool = Query(True, description="label segments with speakers"),
    language: str | None = Query(None, description="ISO 639-1 code; omit to detect it"),
    task: Task = Query(Task.transcribe, description="transcribe, or translate into English"),
    word_timestamps: bool = Query(False, description="include per-word timings"),
    initial_prompt: str | None = Query(None, max_length=1000, description="context or spellings to prime Whisper"),
    num_speakers: int | None = Query(None, ge=1, le=32, description="exact number of speakers, if known"),
    min_speakers: int | None = Query(None, ge=1, le=32, description="at least this many speakers"),
    max_speakers: int | None = Query(None, ge=1, le=32, description="at most this many speakers"),
) -> TranscribeOptions:
    hints = speaker_hints(num_speakers, min_speakers, max_speakers)
    return TranscribeOptions(
        diarize=diarize,
        speakers=hints,
        language=language or None,
        task=task,
        word_timestamps=word_timestamps,
        initial_prompt=initial_prompt,
    )


def output_format(format: OutputFormat = Query(OutputFormat.json, description="json, srt, vtt, txt or rttm")):  # noqa: A002
    return format
