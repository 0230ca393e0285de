"""The embedded diarizer counts speakers without being told, keeps a single voice one speaker (also in
noise), honours speaker hints exactly, and gives a short backchannel its own voice.

Real voices only (tests/fixtures: the LibriVox reader and JFK); the degradations are made here."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, SAMPLE_RATE, TWO_SPEAKERS, load_audio, load_reference

from shared.pipeline.diarization.embedded import EmbeddedDiarizer
from shared.core.domain import SpeakerHints

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def diarizer():
    return EmbeddedDiarizer()


def speakers(turns) -> set[str]:
    return {t.speaker for t in turns}


def label_over(turns, start: float, end: float) -> dict[str, float]:
    """Seconds of [start, end] each speaker label covers."""
    out: dict[str, float] = {}
    for t in turns:
        d = min(t.end, end) - max(t.start, start)
        if d > 0:
            out[t.speaker] = out.get(t.speaker, 0.0) + d
    return out


def majority(turns, start: float, end: float) -> str | None:
    cover = label_over(turns, start, end)
    return max(cover, key=cover.get) if cover else None


def with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speech_rms = np.sqrt(np.mean(x[np.abs(x) > 0.01] ** 2))
    noise = rng.standard_normal(len(x)) * speech_rms / 10 ** (snr_db / 20)
    return (x + noise).astype(np.float32)


def test_two_voices_are_found_without_hints(diarizer):
    samples, ref = load_audio(TWO_SPEAKERS), load_reference(TWO_SPEAKERS)
    turns = diarizer.diarize(samples)
    assert speakers(turns) == {"SPEAKER_00", "SPEAKER_01"}
    # the speech found in every reference turn is mostly labelled with one voice, each turn's speaker's
    voice = {}
    for t in ref["turns"]:
        label = majority(turns, t["start"], t["end"])
        cover = label_over(turns, t["start"], t["end"])
        assert cover[label] >= 0.9 * sum(cover.values()), (t, cover)
        assert voice.setdefault(t["speaker"], label) == label, (t, voice)
    assert len(set(voice.values())) == 2


@pytest.mark.parametrize("snr_db", [None, 20, 10])
def test_one_voice_stays_one_speaker(diarizer, snr_db):
    samples = load_audio(ONE_SPEAKER)
    if snr_db is not None:
        samples = with_noise(samples, snr_db)
    turns = diarizer.diarize(samples)
    assert speakers(turns) == {"SPEAKER_00"}
    assert sum(t.end - t.start for t in turns) > 15.0  # and its speech is still there


def test_one_voice_louder_and_quieter_stays_one_speaker(diarizer):
    samples, ref = load_audio(ONE_SPEAKER).copy(), load_reference(ONE_SPEAKER)
    for turn, gain_db in zip(ref["turns"], (0.0, -14.0, 6.0, -14.0)):
        a, b = int(turn["start"] * SAMPLE_RATE), int(turn["end"] * SAMPLE_RATE)
        samples[a:b] = np.clip(samples[a:b] * 10 ** (gain_db / 20), -1.0, 1.0)
    assert speakers(diarizer.diarize(samples)) == {"SPEAKER_00"}


def test_speaker_hints_are_honoured_exactly(diarizer):
    two, one = load_audio(TWO_SPEAKERS), load_audio(ONE_SPEAKER)
    assert speakers(diarizer.diarize(two, SpeakerHints(num_speakers=2))) == {"SPEAKER_00", "SPEAKER_01"}
    assert len(speakers(diarizer.diarize(two, SpeakerHints(num_speakers=3)))) == 3
    assert len(speakers(diarizer.diarize(one, SpeakerHints(num_speakers=2)))) == 2
    assert speakers(diarizer.diarize(two, SpeakerHints(max_speakers=1))) == {"SPEAKER_00"}
    assert len(speakers(diarizer.diarize(one, SpeakerHints(min_speakers=2, max_speakers=3)))) in (2, 3)


def test_with_the_count_given_the_two_voices_are_split_right(diarizer):
    samples, ref = load_audio(TWO_SPEAKERS), load_reference(TWO_SPEAKERS)
    turns = diarizer.diarize(samples, SpeakerHints(num_speakers=2))
    labels = {t["speaker"]: set() for t in ref["turns"]}
    for t in ref["turns"]:
        labels[t["speaker"]].add(majority(turns, t["start"], t["end"]))
    assert all(len(v) == 1 for v in labels.values()) and labels["jfk"] != labels["librivox_reader"]


def _quietest(x: np.ndarray, start_s: float, end_s: float) -> int:
    """Sample index of the quietest 50 ms between two times (a pause inside a turn)."""
    hop = SAMPLE_RATE // 20
    a, b = int(start_s * SAMPLE_RATE), int(end_s * SAMPLE_RATE)
    energy = [float(np.mean(x[i : i + hop] ** 2)) for i in range(a, b - hop, hop)]
    return a + int(np.argmin(energy)) * hop + hop // 2


def test_a_short_backchannel_gets_the_voice_it_is(diarizer):
    """0.8 s of JFK pasted, between pauses, into the middle of the reader's first turn: it must be
    labelled JFK's voice, and the reader's speech on either side must keep the reader's label."""
    samples, ref = load_audio(TWO_SPEAKERS), load_reference(TWO_SPEAKERS)
    reader, jfk = ref["turns"][0], ref["turns"][1]
    cut = _quietest(samples, reader["start"] + 2.5, reader["end"] - 2.5)
    snippet = samples[int((jfk["start"] + 0.3) * SAMPLE_RATE) : int((jfk["start"] + 1.1) * SAMPLE_RATE)]
    gap = samples[int((reader["end"] + 0.2) * SAMPLE_RATE) :][: int(0.6 * SAMPLE_RATE)]  # the fixture's own quiet
    mixed = np.concatenate([samples[:cut], gap, snippet, gap, samples[cut:]])
    at = (cut + len(gap)) / SAMPLE_RATE
    shift = (2 * len(gap) + len(snippet)) / SAMPLE_RATE

    turns = diarizer.diarize(mixed)
    assert len(speakers(turns)) == 2
    jfk_label = majority(turns, jfk["start"] + shift, jfk["end"] + shift)
    reader_label = majority(turns, reader["start"], cut / SAMPLE_RATE)
    assert jfk_label != reader_label
    snippet_cover = label_over(turns, at, at + len(snippet) / SAMPLE_RATE)
    assert snippet_cover.get(jfk_label, 0.0) >= 0.5 * len(snippet) / SAMPLE_RATE, snippet_cover
    # the reader's speech around it is not flipped
    assert majority(turns, reader["start"], cut / SAMPLE_RATE) == reader_label
    assert majority(turns, at + shift - 0.6, reader["end"] + shift) == reader_label


def test_a_voice_heard_only_briefly_is_still_counted(diarizer):
    """The reader's 22 s, then 2.3 s of JFK (one turn, under the 3 s a speaker needs before it can be
    folded into another): his voice is unlike the reader's, so it is a second speaker, unasked."""
    one, two, ref = load_audio(ONE_SPEAKER), load_audio(TWO_SPEAKERS), load_reference(TWO_SPEAKERS)
    jfk = ref["turns"][3]  # 2.35 s
    snippet = two[int(jfk["start"] * SAMPLE_RATE) : int(jfk["end"] * SAMPLE_RATE)]
    gap = np.zeros(int(0.8 * SAMPLE_RATE), np.float32)
    mixed = np.concatenate([one, gap, snippet, gap])
    at = (len(one) + len(gap)) / SAMPLE_RATE

    turns = diarizer.diarize(mixed)
    assert len(speakers(turns)) == 2
    assert majority(turns, at, at + len(snippet) / SAMPLE_RATE) != majority(turns, 0.0, at - 1.0)
