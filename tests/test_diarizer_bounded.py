"""The embedded diarizer in bounded memory: past `max_cluster_windows` it clusters an evenly spread
subset of the windows and gives every window the nearest centroid's speaker, and must still tell the
fixture's two real voices apart; it reads a stored clip span by span and gives the same turns as from
the samples in memory."""

from __future__ import annotations

import pytest
from audio_fixtures import TWO_SPEAKERS, load_audio, load_reference

from shared.pipeline.diarization.embedded import EmbeddedDiarizer
from shared.core.domain import SpeakerHints
from shared.media.pcm import PcmRef, PcmWriter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def diarizer():
    return EmbeddedDiarizer()


def overlap_agreement(a, b) -> float:
    """Share of the time labelled by `a` where `b` says the same speaker (labels are in order of first
    appearance in both, so they compare directly)."""
    total = agree = 0.0
    for ta in a:
        total += ta.end - ta.start
        for tb in b:
            if tb.speaker == ta.speaker:
                agree += max(0.0, min(ta.end, tb.end) - max(ta.start, tb.start))
    return agree / total


def reference_agreement(turns, ref) -> float:
    first = {}
    for t in ref["turns"]:
        first.setdefault(t["speaker"], f"SPEAKER_{len(first):02d}")
    as_turns = [type(turns[0])(start=t["start"], end=t["end"], speaker=first[t["speaker"]]) for t in ref["turns"]]
    return overlap_agreement(as_turns, turns)


def test_subsampled_clustering_still_tells_two_voices_apart(diarizer, monkeypatch):
    samples, ref = load_audio(TWO_SPEAKERS), load_reference(TWO_SPEAKERS)
    direct = diarizer.diarize(samples)
    monkeypatch.setattr(diarizer, "max_cluster_windows", 12)  # the fixture has ~50 windows: every 5th
    pooled = diarizer.diarize(samples)
    assert {t.speaker for t in pooled} == {"SPEAKER_00", "SPEAKER_01"}
    assert reference_agreement(pooled, ref) >= 0.9 and reference_agreement(direct, ref) >= 0.9
    assert overlap_agreement(direct, pooled) >= 0.9
    with_hint = diarizer.diarize(samples, SpeakerHints(num_speakers=2))
    assert {t.speaker for t in with_hint} == {"SPEAKER_00", "SPEAKER_01"}


def test_a_stored_clip_diarizes_like_the_samples_in_memory(diarizer, tmp_path):
    samples = load_audio(TWO_SPEAKERS)
    with PcmWriter(tmp_path / "clip.pcm") as w:
        w.write(samples)
    stored = diarizer.diarize(PcmRef.of(tmp_path / "clip.pcm"))
    in_memory = diarizer.diarize(samples)
    assert [t.speaker for t in stored] == [t.speaker for t in in_memory]
    assert all(abs(a.start - b.start) < 0.02 and abs(a.end - b.end) < 0.02 for a, b in zip(stored, in_memory))
