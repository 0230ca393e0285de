"""Scoring helpers for tests: word error rate and speaker attribution against fixture references."""

from __future__ import annotations

from collections import Counter

import jiwer
from audio_fixtures import normalize_words

SPELLINGS = {"mr": "mister", "mrs": "missus"}


def words_of(text: str) -> list[str]:
    return [SPELLINGS.get(w, w) for w in normalize_words(text)]


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(" ".join(words_of(reference)), " ".join(words_of(hypothesis)))


def reference_speaker_at(t: float, turns: list[dict]) -> str | None:
    for turn in turns:
        if turn["start"] - 0.25 <= t <= turn["end"] + 0.25:
            return turn["speaker"]
    return None


def speaker_accuracy(words, turns: list[dict]) -> tuple[float, dict[str, str]]:
    """Share of words whose hypothesis speaker maps (by majority) to the reference speaker."""
    pairs = [(w.speaker, reference_speaker_at((w.start + w.end) / 2, turns)) for w in words]
    pairs = [(h, r) for h, r in pairs if r is not None]
    mapping: dict[str, str] = {}
    for hyp in {h for h, _ in pairs}:
        mapping[hyp] = Counter(r for h, r in pairs if h == hyp).most_common(1)[0][0]
    correct = sum(1 for h, r in pairs if mapping.get(h) == r)
    return correct / max(len(pairs), 1), mapping
