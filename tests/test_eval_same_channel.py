"""The same-channel conversation builder (local_dev/eval/same_channel.py) on synthetic signals: LTAS
equalisation, the F0 gender estimate, gender-balanced picks and the shared channel. No models, no
../shared data."""

from __future__ import annotations

import numpy as np
import pytest

from local_dev.eval import corpus
from local_dev.eval import same_channel as same

SR = corpus.SR


def coloured(rng: np.random.Generator, tilt_db_per_octave: float, seconds: float = 6.0) -> np.ndarray:
    """White noise tilted by `tilt_db_per_octave` around 1 kHz, with a 6 dB bump at 2 kHz: a "voice"
    recorded through its own coloured channel."""
    x = rng.standard_normal(int(seconds * SR))
    bump = 6.0 * np.exp(-0.5 * (np.log2(same.BAND_CENTRES / 2000.0) / 0.3) ** 2)
    gains = tilt_db_per_octave * np.log2(same.BAND_CENTRES / 1000.0) + bump * (tilt_db_per_octave > 0)
    y = same.apply_band_gains(x, gains)
    return (0.05 * y / np.sqrt(np.mean(y.astype(np.float64) ** 2))).astype(np.float32)


def harmonic_voice(f0: float, rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    """A vowel-like source: harmonics of a slowly wandering f0 (+-3 %), 1/k amplitudes, syllable bursts."""
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = (np.sin(2 * np.pi * 2.0 * t) > -0.3).astype(float)
    return (0.1 * x * envelope + 1e-4 * rng.standard_normal(len(t))).astype(np.float32)


def test_ltas_equalisation_brings_two_coloured_sources_to_one_target():
    rng = np.random.default_rng(1)
    dark, bright = coloured(rng, -4.0), coloured(rng, +3.0)
    a, b = same.ltas_db(dark), same.ltas_db(bright)
    assert np.abs(a - b).max() > 20  # the two channels differ a lot before
    target = (a + b) / 2
    a_eq, gains = same.equalise(dark, target)
    b_eq, _ = same.equalise(bright, target)
    after_a, after_b = same.ltas_db(a_eq), same.ltas_db(b_eq)
    assert np.sqrt(np.mean((after_a - after_b) ** 2)) < 1.5  # both on one spectrum now
    inner = slice(1, -1)  # the band edges interpolate toward neighbours
    assert np.abs(after_a - target)[inner].max() < 2.0 and np.abs(after_b - target)[inner].max() < 2.0
    assert abs(gains.mean()) < 1e-9 and np.abs(gains).max() <= same.MAX_EQ_DB
    assert len(a_eq) == len(dark) and a_eq.dtype == np.float32


def test_mean_target_and_spread_shrink():
    rng = np.random.default_rng(2)
    sources = [corpus.Source("s%d" % i, coloured(rng, tilt), [(0.0, 6.0)]) for i, tilt in enumerate((-4, -1, 2, 3))]
    target = same.mean_ltas(sources)
    eq = [same.equalised(s, target)[0] for s in sources]
    assert same.ltas_spread_db(eq) < 0.2 * same.ltas_spread_db(sources)
    for s in eq:  # levelled to the common speech level
        assert abs(20 * np.log10(corpus.speech_rms(s.audio, s.regions)) - corpus.SPEECH_DBFS) < 0.1


def test_f0_gender_estimate_separates_a_low_and_a_high_voice():
    rng = np.random.default_rng(3)
    low, high = harmonic_voice(110.0, rng), harmonic_voice(215.0, rng)
    f_low, f_high = same.median_f0(low), same.median_f0(high)
    assert abs(f_low - 110) < 8 and abs(f_high - 215) < 12
    assert same.gender_of(f_low) == "M" and same.gender_of(f_high) == "F"


@pytest.mark.parametrize("n", range(2, 9))
def test_same_gender_pairs_as_common_as_mixed(n):
    w = same.composition_weights(n)
    assert abs(w.sum() - 1) < 1e-9 and (w >= -1e-12).all()
    diff = [np.subtract(*same.pairs(k, n)) for k in range(n + 1)]
    assert abs(float(w @ diff)) < 1e-9
    assert np.allclose(w, w[::-1])  # neither gender favoured


@pytest.mark.parametrize("steer", [False, True])
def test_pick_voices_balances_pairs_over_many_conversations(steer):
    genders = {f"f{i}": "F" for i in range(20)} | {f"m{i}": "M" for i in range(20)}
    rng = np.random.default_rng(4)
    same_pairs = mixed = 0
    for i in range(400):
        n = 2 + i % 7
        names = same.pick_voices(genders, n, rng, lean=same_pairs - mixed if steer else 0)
        assert len(set(names)) == n
        s, m = same.pairs(sum(genders[x] == "F" for x in names), n)
        same_pairs, mixed = same_pairs + s, mixed + m
    if steer:  # held within one conversation's worth of pairs all along
        assert abs(same_pairs - mixed) <= 28
    else:  # balanced in expectation
        assert abs(same_pairs - mixed) < 0.08 * (same_pairs + mixed)


def test_shared_channel_keeps_the_length_and_the_speech_level():
    rng = np.random.default_rng(5)
    x = np.concatenate([harmonic_voice(120.0, rng), np.zeros(SR, np.float32), harmonic_voice(200.0, rng)])
    speech = [(0.0, 4.0), (5.0, 9.0)]
    y, info = same.shared_channel(x, np.random.default_rng(6), speech, codec=False)
    assert len(y) == len(x) and y.dtype == np.float32
    assert 15 <= info["snr_db"] <= 30 and 0.25 <= info["rt60_s"] <= 0.7 and info["codec"] is None
    pause = y[int(4.3 * SR) : int(4.7 * SR)]
    assert 20 * np.log10(corpus.speech_rms(y, speech) / np.sqrt(np.mean(pause.astype(np.float64) ** 2))) > 8
    phoned, info = same.shared_channel(x, np.random.default_rng(6), speech, codec=True)
    spectrum = np.abs(np.fft.rfft(phoned)) ** 2
    high = spectrum[np.fft.rfftfreq(len(phoned), 1 / SR) > 4000].sum()
    assert info["codec"] == "phone" and high < 1e-2 * spectrum.sum()


def test_build_gives_exact_turns_of_balanced_voices():
    rng = np.random.default_rng(7)
    pitches = {"a": 110.0, "b": 125.0, "c": 205.0, "d": 230.0}
    voices = {}
    for s, f in pitches.items():
        bursts = [np.concatenate([harmonic_voice(f, rng, 2.0), np.zeros(SR // 2, np.float32)]) for _ in range(6)]
        x = np.concatenate(bursts)
        voices[s] = [corpus.Source.of(s, x)]
    genders = {s: same.gender_of(f) for s, f in pitches.items()}
    conv = same.build(voices, genders, 3, 30.0, np.random.default_rng(8))
    assert {t.speaker for t in conv.turns} == set(conv.speakers) and len(conv.speakers) == 3
    assert conv.meta["same_gender_pairs"] + conv.meta["mixed_gender_pairs"] == 3
    assert all(abs(db) <= same.LEVEL_DB for db in conv.meta["levels_db"].values())
    assert conv.audio.dtype == np.float32 and np.abs(conv.audio).max() <= 0.95 + 1e-6
