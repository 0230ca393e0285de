"""Words + speaker turns -> segments: a speaker for every word, segments cut where the speaker changes.

Segments are also cut at sentence ends and long pauses, so they read well as subtitles and can be
streamed as soon as they are final.
"""

from __future__ import annotations

import bisect
from collections import Counter
from itertools import accumulate
from math import fsum

from shared.core.domain import Decode, Segment, Turn, Word

PAUSE_S = 1.0  # a silence this long between words starts a new segment
MAX_SEGMENT_S = 15.0
SENTENCE_END = (".", "?", "!", "。", "？", "！")
ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "vs.", "e.g.", "i.e.", "jr.", "sr."}


class TurnIndex:
    """Turns sorted by start, for lookups in O(log n + overlapping turns): a 4-hour recording has
    thousands of turns and tens of thousands of words."""

    def __init__(self, turns: list[Turn]):
        self.turns = sorted(turns, key=lambda t: t.start)
        self.starts = [t.start for t in self.turns]
        self.reach = list(accumulate((t.end for t in self.turns), max))  # latest end among turns[:i+1]

    def __len__(self) -> int:
        return len(self.turns)

    def overlapping(self, start: float, end: float) -> list[Turn]:
        out = []
        j = bisect.bisect_left(self.starts, end) - 1  # turns from here on start at or after `end`
        while j >= 0 and self.reach[j] > start:
            if self.turns[j].end > start:
                out.append(self.turns[j])
            j -= 1
        return out

    def nearest(self, t: float) -> Turn:
        i = bisect.bisect_left(self.starts, t)
        near = self.turns[max(0, i - 2) : i + 2]
        return min(near, key=lambda turn: min(abs(turn.start - t), abs(turn.end - t)))


def speaker_for(start: float, end: float, turns: "list[Turn] | TurnIndex") -> str | None:
    """The speaker whose turns overlap [start, end] most; the nearest turn's when none overlaps."""
    if not turns:
        return None
    index = turns if isinstance(turns, TurnIndex) else TurnIndex(turns)
    overlap: Counter[str] = Counter()
    for turn in index.overlapping(start, end):
        overlap[turn.speaker] += min(end, turn.end) - max(start, turn.start)
    if overlap:
        return overlap.most_common(1)[0][0]
    return index.nearest((start + end) / 2).speaker


def build_segments(words: list[Word], turns: "list[Turn] | TurnIndex | None") -> list[Segment]:
    """Label every word with a speaker (None without diarization) and group words into segments."""
    segments: list[Segment] = []
    run: list[Word] = []
    index = turns if isinstance(turns, TurnIndex) or not turns else TurnIndex(turns)
    for word in words:
        if index:
            word = word.model_copy(update={"speaker": speaker_for(word.start, word.end, index)})
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
        **decode_stats(words),
    )


def decode_stats(words: list[Word]) -> dict:
    """The statistics of the Whisper segments `words` were heard in (see the Segment fields)."""
    weights: Counter[Decode] = Counter()
    for w in words:
        if w.decode is not None:
            weights[w.decode] += len(w.tokens) or 1
    if not weights:
        return {}
    logprobs = {d.avg_logprob for d in weights}  # one: exactly faster-whisper's, not a float sum's rounding
    return {
        "avg_logprob": logprobs.pop() if len(logprobs) == 1
        else fsum(n * d.avg_logprob for d, n in weights.items()) / weights.total(),
        "compression_ratio": max(d.compression_ratio for d in weights),
        "no_speech_prob": max(d.no_speech_prob for d in weights),
        "temperature": max(d.temperature for d in weights),
        "tokens": [t for w in words for t in w.tokens] if all(w.tokens for w in words) else None,
    }
