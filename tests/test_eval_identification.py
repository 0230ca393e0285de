"""The named-speaker evaluation's scoring (local_dev/eval/identification.py) and its set's pure helpers
(local_dev/eval/identification_sets.py) on hand-made turns. No models, no ../shared data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from local_dev.eval import corpus
from local_dev.eval import identification as ident
from local_dev.eval import identification_sets as iset

REF = [(0.0, 4.0, "alice"), (4.0, 8.0, "bob"), (8.0, 10.0, "carol"), (9.0, 10.0, "alice")]


def test_frame_counts_right_names_over_single_speaker_speech():
    hyp = [(0.0, 4.0, "alice"), (4.0, 8.0, "SPEAKER_01"), (8.0, 10.0, "SPEAKER_02")]
    counts, major = ident.frame_counts(REF, hyp, {"alice", "bob"})
    assert counts["named_s"] == pytest.approx(4.0)
    assert counts["named_right_s"] == pytest.approx(4.0)
    assert counts["enrolled_s"] == pytest.approx(8.0)  # alice 4 + bob 4; 9-10 s is overlap, left out
    assert counts["enrolled_named_s"] == pytest.approx(4.0)
    assert counts["unknown_s"] == pytest.approx(1.0)  # carol alone, 8-9 s
    assert counts["unknown_named_s"] == 0.0
    r = ident.rates(counts)
    assert r == {"precision": 1.0, "recall": 0.5, "unknown_named": 0.0}
    assert major == {"alice": "alice", "bob": "SPEAKER_01", "carol": "SPEAKER_02"}


def test_frame_counts_wrong_names_and_unknowns_named():
    hyp = [(0.0, 6.0, "bob"), (6.0, 10.0, "alice")]  # bob's name on alice and half of bob; carol named alice
    counts, major = ident.frame_counts(REF, hyp, {"alice", "bob"})
    assert counts["named_s"] == pytest.approx(9.0)
    assert counts["named_right_s"] == pytest.approx(2.0)  # bob 4-6
    assert counts["enrolled_named_s"] == pytest.approx(2.0)
    assert counts["unknown_named_s"] == pytest.approx(1.0)
    assert ident.rates(counts)["unknown_named"] == pytest.approx(1.0)
    assert major["alice"] == "bob" and major["bob"] is None  # bob: 2 s as bob, 2 s as alice: no majority


def test_silence_in_the_hypothesis_is_not_a_name():
    counts, major = ident.frame_counts(REF, [], {"alice"})
    assert counts["named_s"] == 0.0 and counts["enrolled_named_s"] == 0.0
    assert math.isnan(ident.rates(counts)["precision"])
    assert set(major.values()) == {None}


def test_consistency_counts_speakers_heard_twice():
    results = [
        {"major": {"alice": "alice", "bob": "SPEAKER_00"}, "known": {"alice", "bob"}},
        {"major": {"alice": "alice", "bob": "bob", "dan": "alice"}, "known": {"alice", "bob"}},
        {"major": {"carol": "carol"}, "known": {"carol"}},
    ]
    assert ident.consistency(results) == (1, 2)


def test_choose_prefers_recall_within_the_targets_else_precision():
    ok = {"precision": 0.98, "unknown_named": 0.01}
    table = {0.6: {"precision": 0.9, "recall": 0.99, "unknown_named": 0.1},
             0.7: dict(ok, recall=0.9), 0.8: dict(ok, recall=0.8)}
    assert ident.choose(table) == 0.7
    bad = {0.6: {"precision": 0.9, "recall": 0.9, "unknown_named": 0.1},
           0.7: {"precision": 0.95, "recall": 0.8, "unknown_named": 0.05}}
    assert ident.choose(bad) == 0.7


def test_own_spans_leave_out_other_speakers():
    turns = [(0.0, 5.0, "a"), (2.0, 3.0, "b"), (6.0, 9.0, "a"), (8.0, 12.0, "c")]
    assert iset.own_spans(turns, "a", 0.0, 7.0) == [(0.0, 2.0), (3.0, 5.0), (6.0, 7.0)]
    assert iset.own_spans(turns, "a", 0.0, 20.0)[-1] == (6.0, 8.0)


def test_enrolment_split_one_recording_keeps_enough_for_the_test():
    regions = [(i * 2.0, i * 2.0 + 1.5) for i in range(10)]  # 15 s of speech
    src = corpus.Source("x", np.zeros(20 * corpus.SR, np.float32), regions)
    enrol, test = iset.enrolment_split([src])
    assert 6.0 <= iset.speech_of(enrol.spans) <= 15.0
    assert iset.speech_of(test[0].regions) >= iset.MIN_TEST_S
    assert set(enrol.spans).isdisjoint(test[0].regions)
    short = corpus.Source("y", np.zeros(10 * corpus.SR, np.float32), regions[:6])  # 9 s: too little
    assert iset.enrolment_split([short]) is None


def test_split_speakers_is_disjoint_and_spreads_multi_recording_speakers():
    src = corpus.Source("s", np.zeros(10, np.float32), [(0.0, 0.0)])
    voices = {f"m{i}": [src, src] for i in range(4)} | {f"s{i}": [src] for i in range(9)}
    halves = iset.split_speakers(voices, seed=1)
    assert set(halves["tune"]).isdisjoint(halves["check"])
    assert set(halves["tune"]) | set(halves["check"]) == set(voices)
    assert sum(s.startswith("m") for s in halves["tune"]) == 2
