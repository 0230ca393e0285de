"""Scoring helpers for tests: WER (shared with the benchmark) and speaker attribution per word."""

from __future__ import annotations

from collections import Counter

from local_dev.eval.scoring import normalize_words as words_of  # noqa: F401 - re-exported for tests
from local_dev.eval.scoring import wer  # noqa: F401


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


# Word edits one decode of the same audio may show against another on other float paths (another process,
# thread count or CPU): on one machine of this kind a worker heard "ill disposed" as "old sposed" twice
# against the in-process decode, 4 of the two-speaker fixture's 66 words, while on another every thread
# count from 1 to 4 gave the same 66 words. Batched beam search flips on such ambiguous words; it never
# loses a stretch of speech, which the time coverage below checks.
MODEL_VARIANCE_SHARE = 0.08


def assert_same_transcript(got, want, *, time_tol: float = 0.1, max_word_share: float = MODEL_VARIANCE_SHARE,
                           min_covered: float = 0.95) -> None:
    """Two transcripts of the same audio from different processes or thread layouts: float paths may
    differ (a word probability in the third decimal, a word time by a frame, now and then a comma or an
    ambiguous word), so compare words, speakers and times within the model's own variance across float
    paths, never bit for bit: language, duration and speakers equal; word edits within
    `max_word_share`; and no speech lost: at least `min_covered` of `want`'s words have a word of `got`
    within 0.5 s."""
    import jiwer

    assert got.language == want.language and abs(got.duration - want.duration) < 1e-3
    assert sorted(got.speakers) == sorted(want.speakers)
    g = words_of(" ".join(s.text for s in got.segments))
    w = words_of(" ".join(s.text for s in want.segments))
    diff = jiwer.process_words(" ".join(w), " ".join(g))
    assert diff.substitutions + diff.deletions + diff.insertions <= max(1, max_word_share * len(w)), diff
    got_words = [x for s in got.segments for x in (s.words or [])]
    want_words = [x for s in want.segments for x in (s.words or [])]
    if want_words:
        covered = sum(any(a.start - 0.5 <= b.end and b.start <= a.end + 0.5 for b in got_words) for a in want_words)
        assert covered >= min_covered * len(want_words), (covered, len(want_words))
    if len(got_words) == len(want_words):  # same words: their times and speakers agree too
        assert all(abs(a.start - b.start) <= time_tol and abs(a.end - b.end) <= time_tol
                   for a, b in zip(got_words, want_words))
        same = sum(a.speaker == b.speaker for a, b in zip(got_words, want_words))
        assert same >= 0.97 * len(want_words), (same, len(want_words))
