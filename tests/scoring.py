"""Scoring helpers for tests: WER (shared with the benchmark) and speaker attribution per word."""

from __future__ import annotations

from collections import Counter

from local_dev.scoring import normalize_words as words_of  # noqa: F401 - re-exported for tests
from local_dev.scoring import wer  # noqa: F401


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
