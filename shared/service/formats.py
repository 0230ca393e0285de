"""Transcript -> json | srt | vtt | txt | rttm."""

from __future__ import annotations

from collections.abc import Callable

from shared.core.domain import OutputFormat, Transcript

MEDIA_TYPES = {
    OutputFormat.json: "application/json",
    OutputFormat.srt: "application/x-subrip",
    OutputFormat.vtt: "text/vtt",
    OutputFormat.txt: "text/plain",
    OutputFormat.rttm: "text/plain",
}


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_json(t: Transcript, *, include_words: bool = True) -> str:
    exclude = None if include_words else {"segments": {"__all__": {"words"}}}
    return t.model_dump_json(exclude=exclude, exclude_none=False)


def to_srt(t: Transcript) -> str:
    blocks = []
    for i, seg in enumerate(t.segments, 1):
        text = f"[{seg.speaker}] {seg.text}" if seg.speaker else seg.text
        blocks.append(f"{i}\n{_clock(seg.start, ',')} --> {_clock(seg.end, ',')}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    blocks = ["WEBVTT\n"]
    for seg in t.segments:
        text = f"<v {seg.speaker}>{seg.text}" if seg.speaker else seg.text
        blocks.append(f"{_clock(seg.start, '.')} --> {_clock(seg.end, '.')}\n{text}\n")
    return "\n".join(blocks)


def to_txt(t: Transcript) -> str:
    return "".join(f"{seg.speaker}: {seg.text}\n" if seg.speaker else f"{seg.text}\n" for seg in t.segments)


def to_rttm(t: Transcript, file_id: str = "audio") -> str:
    """One SPEAKER line per segment (NIST RTTM). Segments without a speaker are labelled SPEAKER_00; a
    name's whitespace becomes "_" (RTTM's fields are separated by spaces)."""
    lines = []
    for seg in t.segments:
        speaker = "_".join((seg.speaker or "SPEAKER_00").split())
        lines.append(
            f"SPEAKER {file_id} 1 {seg.start:.3f} {max(seg.end - seg.start, 0):.3f} <NA> <NA> {speaker} <NA> <NA>"
        )
    return "\n".join(lines) + ("\n" if lines else "")


RENDERERS: dict[OutputFormat, Callable[[Transcript], str]] = {
    OutputFormat.json: to_json,
    OutputFormat.srt: to_srt,
    OutputFormat.vtt: to_vtt,
    OutputFormat.txt: to_txt,
    OutputFormat.rttm: to_rttm,
}


def render(t: Transcript, fmt: OutputFormat | str, *, include_words: bool = True) -> str:
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.json:
        return to_json(t, include_words=include_words)
    return RENDERERS[fmt](t)
