"""Words + speaker turns -> segments: a speaker for every word, segments cut where the speaker changes.

Segments are also cut at sentence ends and long pauses, so they read well as subtitles and can be
streamed as soon as they are final.
"""

from __future__ import annotations

from collections import Counter

from shared.domain import Segment, Turn, Word

PAUSE_S = 1.0  # a silence this long between words starts a new segment
MAX_SEGMENT_S = 15.0
SENTENCE_END = (".", "?", "!", "。", "？", "！")
ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "vs.", "e.g.", "i.e.", "jr.", "sr."}


def speaker_for(start: float, end: float, turns: list[Turn]) -> str | None:
    """The speaker whose turns overlap [start, end] most; the nearest turn's when none overlaps."""
    if not turns:
        return None
    overlap: Counter[str] = Counter()
    for turn in turns:
        o = min(end, turn.end) - max(start, turn.start)
        if o > 0:
            overlap[turn.speaker] += o
    if overlap:
        return overlap.most_common(1)[0][0]
    mid = (start + end) / 2
    return min(turns, key=lambda t: min(abs(t.start - mid), abs(t.end - mid))).speaker


def build_segments(words: list[Word], turns: list[Turn] | None) -> list[Segment]:
    """Label every word with a speaker (None without diarization) and group words into segments."""
    segments: list[Segment] = []
    run: list[Word] = []
    for word in words:
        if turns:
            word = word.model_copy(update={"speaker": speaker_for(word.start, word.end, turns)})
        if run and _starts_new_segment(run, word):
            segments.append(_segment(run))
            run = []
        run.append(word)
    if run:
        segments.append(_segment(run))
    return segments


def _starts_new_segment(run: list[Word], word: Word) -> bool:
    last = run[-1]
    return (
        word.speaker != last.speaker
        or word.start - last.end > PAUSE_S
        or _ends_sentence(last.word)
        or word.end - run[0].start > MAX_SEGMENT_S
    )


def _ends_sentence(text: str) -> bool:
    text = text.strip()
    return text.endswith(SENTENCE_END) and text.lower() not in ABBREVIATIONS


def _segment(words: list[Word]) -> Segment:
    return Segment(
        speaker=words[0].speaker,
        start=words[0].start,
        end=words[-1].end,
        text="".join(w.word for w in words).strip(),
        words=words,
    )
