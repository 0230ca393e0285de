"""The `make eval` conversation builder (local_dev/eval/corpus.py) on synthetic voices: each "speaker" is
bursts of a harmonic tone at its own pitch with silences between, so where a speaker's audio landed can
be read back from the mix. No models, no ../shared data."""

from __future__ import annotations

import numpy as np
import pytest

from local_dev.eval import corpus

SR = corpus.SR
PITCH = {"a": 180.0, "b": 260.0, "c": 370.0, "d": 520.0}


def tone_voice(pitch: float, rng: np.random.Generator, seconds: float = 20.0) -> np.ndarray:
    """Bursts of 1.2-2.5 s of a harmonic tone, 0.4-0.7 s of (almost) silence between them."""
    out, t = [], 0.0
    while t < seconds:
        n = int(rng.uniform(1.2, 2.5) * SR)
        k = np.arange(n) / SR
        out.append(0.3 * (np.sin(2 * np.pi * pitch * k) + 0.5 * np.sin(4 * np.pi * pitch * k)))
        out.append(np.zeros(int(rng.uniform(0.4, 0.7) * SR)))
        t += (len(out[-1]) + n) / SR
    x = np.concatenate([np.zeros(int(0.3 * SR))] + out)
    return (x + rng.standard_normal(len(x)) * 1e-5).astype(np.float32)


@pytest.fixture(scope="module")
def voices():
    rng = np.random.default_rng(7)
    return {s: [corpus.Source.of(s, tone_voice(p, rng)) for _ in range(2)] for s, p in PITCH.items()}


def build(voices, seed: int, **params):
    return corpus.build_conversation(voices, 3, 40.0, np.random.default_rng(seed), corpus.Params(**params))


def rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20)


def test_source_regions_are_the_bursts():
    rng = np.random.default_rng(3)
    x = tone_voice(200.0, rng, seconds=8.0)
    regions = corpus.speech_regions(x)
    assert len(regions) >= 3
    loud = np.abs(x) > 0.01
    edges = np.flatnonzero(np.diff(loud.astype(int)))
    assert abs(regions[0][0] - (edges[0] + 1) / SR) < 0.06  # first burst onset, within the 40 ms padding
    assert all(b - a > 1.0 for a, b in regions)


def test_same_seed_same_conversation(voices):
    one, two, other = build(voices, 11), build(voices, 11), build(voices, 12)
    assert np.array_equal(one.audio, two.audio)
    assert [(t.start, t.end, t.speaker) for t in one.turns] == [(t.start, t.end, t.speaker) for t in two.turns]
    assert one.audio.dtype == np.float32
    assert len(other.audio) != len(one.audio) or not np.array_equal(other.audio, one.audio)


def test_reference_turns_are_where_the_audio_is(voices):
    conv = build(voices, 5)
    assert 30.0 < conv.duration < 60.0 and len(conv.speakers) == 3
    assert {t.speaker for t in conv.turns} == set(conv.speakers)  # everyone talks
    inside = np.zeros(len(conv.audio), bool)
    for t in conv.turns:
        inside[int(t.start * SR) : int(t.end * SR)] = True
    # outside every reference turn (50 ms clear of them): only the -70 dBFS noise floor
    clear = ~np.convolve(inside, np.ones(int(0.05 * SR)), mode="same").astype(bool)
    assert clear.sum() > SR and rms_db(conv.audio[clear]) < -65
    # inside each turn where nobody else talks: loud, and at its speaker's pitch
    for t in conv.turns:
        others = [o for o in conv.turns if o.speaker != t.speaker and o.start < t.end and o.end > t.start]
        if others or t.end - t.start < 0.5:
            continue
        piece = conv.audio[int((t.start + 0.1) * SR) : int((t.end - 0.1) * SR)]
        assert rms_db(piece) > -40
        spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece))))
        peak = np.fft.rfftfreq(len(piece), 1 / SR)[np.argmax(spectrum)]
        assert abs(peak - PITCH[t.speaker]) < 5, (t, peak)


@pytest.mark.parametrize("seed", range(4))
def test_every_voice_speaks_even_when_the_time_runs_out_first(voices, seed):
    conv = corpus.build_conversation(voices, 4, 5.0, np.random.default_rng(seed))
    assert {t.speaker for t in conv.turns} == set(conv.speakers) and len(conv.speakers) == 4


def test_overlap_and_backchannels_are_there(voices):
    conv = build(voices, 9, backchannel_p=1.0, overlap_p=0.5)
    assert conv.meta["backchannels"] >= 2 and conv.meta["overlaps"] >= 2
    assert corpus.overlap_seconds(conv.turns) > 0.3
    short = [t for t in conv.turns if t.end - t.start <= 1.0 + 1e-6]
    assert short and all(t.end - t.start >= 0.3 - 1e-6 for t in short)
    assert all(abs(db) <= 10 for db in conv.meta["levels_db"].values())
    single = corpus.build_conversation(voices, 1, 40.0, np.random.default_rng(9))
    assert single.meta["backchannels"] == 0 and corpus.overlap_seconds(single.turns) == 0


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_noise_at_the_asked_snr(kind):
    rng = np.random.default_rng(1)
    x = tone_voice(220.0, rng, seconds=10.0)
    speech = corpus.speech_regions(x)
    y = corpus.add_noise(x, 10.0, rng, kind=kind, speech=speech)
    mask = np.zeros(len(x), bool)
    for a, b in speech:
        mask[int(a * SR) : int(b * SR)] = True
    snr = rms_db(x[mask]) - rms_db(y - x)
    assert abs(snr - 10.0) < 1.0


def test_degradations():
    rng = np.random.default_rng(2)
    x = tone_voice(220.0, rng, seconds=6.0)
    speech = corpus.speech_regions(x)
    noisy, info = corpus.degrade(x, "noise", np.random.default_rng(4), speech=speech)
    assert 5 <= info["snr_db"] <= 15 and noisy.dtype == np.float32 and len(noisy) == len(x)
    wet, info = corpus.degrade(x, "reverb", np.random.default_rng(4))
    assert 0.3 <= info["rt60_s"] <= 0.9 and abs(rms_db(wet) - rms_db(x)) < 0.5
    gap = slice(int(speech[0][1] * SR) + 800, int(speech[1][0] * SR) - 800)  # a pause: the tail rings on
    assert rms_db(wet[gap]) > rms_db(x[gap]) + 20
    hiss = 0.2 * np.sin(2 * np.pi * 6000.0 * np.arange(len(x)) / SR)  # out of the phone band
    band, _ = corpus.degrade((x + hiss).astype(np.float32), "phone", np.random.default_rng(4), speech=speech)
    spectrum = np.abs(np.fft.rfft(band)) ** 2
    f = np.fft.rfftfreq(len(band), 1 / SR)
    assert spectrum[f > 4000].sum() < 1e-3 * spectrum.sum()
    quiet, _ = corpus.degrade(x, "quiet", rng)
    assert abs(rms_db(x) - rms_db(quiet) - 20) < 0.01
