"""Same-channel conversations: LibriSpeech voices made to sound like one room and one microphone.

Every LibriSpeech voice comes from its own recording (its own microphone, room, level and MP3 band
limit); those channel differences separate speakers that a real conversation, recorded through one
channel, does not. This module removes them as far as a linear filter can and then imposes one shared
channel on the whole mix. Pure signal code (numpy/scipy, librosa's YIN); local_dev/eval/sets.py builds
the ``same-*`` groups with it, tests feed it synthetic signals.

1. **Equalisation** (per source): the long-term average spectrum (LTAS: Welch power spectrum of the
   source's speech regions, averaged in 1/3-octave bands 63 Hz-6.3 kHz, in dB relative to its own mean
   over bands, so level does not enter) is corrected to one common target, the mean LTAS of all voices,
   by a zero-phase filter whose gain is ``target - ltas`` per band (clipped to +-MAX_EQ_DB, interpolated
   over log frequency). What stays is each voice's fine spectral detail (pitch, formants within a band);
   the coloration of its microphone, room and codec (tilt, band limits, resonances wider than a third of an
   octave) goes. Then every source is levelled to the same speech RMS, and the conversation places
   speakers within +-LEVEL_DB of each other (per-turn jitter +-TURN_JITTER_DB).
2. **Voices**: gender is estimated (no label is used) from the median F0 (YIN, 60-400 Hz) of the
   loudest half of each voice's speech frames, split at F0_SPLIT_HZ; the number of female voices of a
   conversation is drawn so that same-gender pairs are as common as mixed ones (in expectation, and
   kept so over a set by steering each draw against the running imbalance).
3. **One shared chain** over the finished mix: one synthetic room (corpus.impulse_response, RT60
   0.25-0.7 s, direct-to-reverberant 0-6 dB), one noise bed (pink or brown, 15-30 dB below the speech),
   one microphone (2nd-order band-pass, low edge 80-200 Hz, high edge 5-7.5 kHz, tilt -2..+1 dB/octave)
   that colours voices and noise alike, and for some conversations one codec (corpus.phone).
The reference turns are the builder's exact ones (the chain only adds a reverberant tail).

Measured on the 351 LibriSpeech recordings (set same-v3, seed 20261201): LTAS spread across sources
(RMS over bands of the per-band standard deviation) 6.0 dB before, 1.1 dB after equalisation; the F0
gender estimate agrees with LibriSpeech's SPEAKERS.TXT on 241 of 261 voices (the labels are only
reported, never used). Cosine between different speakers' voice centroids (local_dev/eval/separation.py,
the embedded diarizer's encoder): conv-clean mean 0.59, same-clean 0.72, same-phone 0.77, the seven real
recordings 0.69 -- the same-channel voices sit as close as real ones, the conv voices much further apart.
"""

from __future__ import annotations

import librosa
import numpy as np
from scipy.signal import butter, sosfiltfilt, welch

from local_dev.eval import corpus

SR = corpus.SR
BAND_CENTRES = 1000.0 * 2.0 ** (np.arange(-12, 9) / 3.0)  # 62.5 Hz ... 6.35 kHz, 1/3 octave apart
MAX_EQ_DB = 18.0
F0_SPLIT_HZ = 165.0
LEVEL_DB = 2.0
TURN_JITTER_DB = 1.0


# ------------------------------------------------------------------------------------------ spectrum


def speech_part(x: np.ndarray, regions: list[tuple[float, float]] | None) -> np.ndarray:
    parts = [x[int(a * SR) : int(b * SR)] for a, b in (regions or [])]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts).astype(np.float64) if parts else np.asarray(x, np.float64)


def ltas_db(x: np.ndarray, regions: list[tuple[float, float]] | None = None, n_fft: int = 1024) -> np.ndarray:
    """Long-term average spectrum of the speech of `x` in 1/3-octave bands (BAND_CENTRES), dB relative
    to its own mean over the bands (the shape, not the level)."""
    y = speech_part(x, regions)
    f, psd = welch(y, SR, nperseg=min(n_fft, len(y)))
    out = np.empty(len(BAND_CENTRES))
    for i, c in enumerate(BAND_CENTRES):
        inside = (f >= c * 2 ** (-1 / 6)) & (f < c * 2 ** (1 / 6))
        if not inside.any():  # narrower than a bin: the nearest bin
            inside = np.abs(f - c) == np.abs(f - c).min()
        out[i] = 10 * np.log10(psd[inside].mean() + 1e-20)
    return out - out.mean()


def band_gains(gains_db: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Linear gains at `freqs`, interpolated over log frequency between the band centres (held flat
    below the first and above the last)."""
    logf = np.log2(np.maximum(freqs, 1.0))
    return 10 ** (np.interp(logf, np.log2(BAND_CENTRES), gains_db) / 20)


def apply_band_gains(x: np.ndarray, gains_db: np.ndarray) -> np.ndarray:
    """`x` through a zero-phase filter with `gains_db` at the band centres (FFT of the whole signal,
    padded so the short smooth response does not wrap)."""
    n = len(x) + 4096
    spectrum = np.fft.rfft(np.asarray(x, np.float64), n)
    spectrum *= band_gains(np.asarray(gains_db, np.float64), np.fft.rfftfreq(n, 1 / SR))
    return np.fft.irfft(spectrum, n)[: len(x)].astype(np.float32)


def equalise(x: np.ndarray, target_db: np.ndarray, regions=None, max_db: float = MAX_EQ_DB):
    """(x with its LTAS corrected toward `target_db`, the gains applied in dB per band)."""
    gains = np.clip(np.asarray(target_db) - ltas_db(x, regions), -max_db, max_db)
    gains -= gains.mean()
    return apply_band_gains(x, gains), gains


def mean_ltas(sources: list[corpus.Source]) -> np.ndarray:
    """The common target: the mean (in dB) of every source's LTAS."""
    t = np.mean([ltas_db(s.audio, s.regions) for s in sources], axis=0)
    return t - t.mean()


def equalised(source: corpus.Source, target_db: np.ndarray) -> tuple[corpus.Source, np.ndarray]:
    """The source with its LTAS set to the target and its speech levelled to corpus.SPEECH_DBFS."""
    y, gains = equalise(source.audio, target_db, source.regions)
    y = y * corpus.db_gain(corpus.SPEECH_DBFS) / corpus.speech_rms(y, source.regions)
    return corpus.Source(source.speaker, y.astype(np.float32), source.regions), gains


def ltas_spread_db(sources: list[corpus.Source]) -> float:
    """How far voices' LTAS lie apart: the RMS over bands of the standard deviation across sources (dB)."""
    shapes = np.array([ltas_db(s.audio, s.regions) for s in sources])
    return float(np.sqrt((shapes.std(axis=0) ** 2).mean()))


# ------------------------------------------------------------------------------------------ voices


def median_f0(x: np.ndarray, regions=None, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median F0 (YIN) of the loudest half of the speech frames of `x` (the voiced ones, mostly)."""
    y = speech_part(x, regions).astype(np.float32)
    frame, hop = 1024, 256
    f0 = librosa.yin(y, fmin=fmin, fmax=fmax, sr=SR, frame_length=frame, hop_length=hop)
    rms = librosa.feature.rms(y=y, frame_length=frame, hop_length=hop)[0]
    n = min(len(f0), len(rms))
    loud = rms[:n] >= np.median(rms[:n])
    return float(np.median(f0[:n][loud])) if loud.any() else float("nan")


def gender_of(f0_hz: float) -> str:
    """'F' or 'M' from a median F0 (a guess: low female and high male voices exist)."""
    return "F" if f0_hz >= F0_SPLIT_HZ else "M"


def pairs(n_female: int, n: int) -> tuple[int, int]:
    """(same-gender pairs, mixed pairs) among n voices of which n_female are female."""
    m = n - n_female
    return n_female * (n_female - 1) // 2 + m * (m - 1) // 2, n_female * m


def composition_weights(n: int) -> np.ndarray:
    """P(k female voices), k = 0..n: uniform over k, mixed with the most balanced (or the most one-sided)
    composition just enough that expected same-gender pairs equal expected mixed pairs."""
    k = np.arange(n + 1)
    p = np.full(n + 1, 1.0 / (n + 1))
    if n < 2:
        return p
    diff = np.array([np.subtract(*pairs(int(i), n)) for i in k], float)  # same - mixed
    d = float(p @ diff)
    if abs(d) < 1e-12:
        return p
    ends = (n // 2, n - n // 2) if d > 0 else (0, n)  # the most balanced or the most one-sided, both ways
    a = d / (d - diff[ends[0]])  # (1 - a) d + a diff[end] = 0
    q = (1 - a) * p
    for j in ends:
        q[j] += a / 2
    return q


def pick_voices(genders: dict[str, str], n: int, rng: np.random.Generator, lean: int = 0) -> list[str]:
    """n distinct voices, their number of female voices drawn from composition_weights(n); `lean` (the
    same-gender minus mixed pairs of the conversations picked so far) restricts the draw to compositions
    that bring that balance back toward zero, so a set of conversations stays balanced, not just its
    expectation."""
    female = sorted(s for s, g in genders.items() if g == "F")
    male = sorted(s for s, g in genders.items() if g != "F")
    w = composition_weights(n)
    w = w * np.array([k <= len(female) and n - k <= len(male) for k in range(n + 1)], float)
    diff = np.array([np.subtract(*pairs(k, n)) for k in range(n + 1)])
    toward = w * ((diff <= 0) if lean > 0 else (diff >= 0) if lean < 0 else 1)
    if toward.sum() > 0:
        w = toward
    k = int(rng.choice(n + 1, p=w / w.sum()))
    chosen = [str(s) for s in rng.choice(female, k, replace=False)] if k else []
    chosen += [str(s) for s in rng.choice(male, n - k, replace=False)] if n - k else []
    return [chosen[i] for i in rng.permutation(n)]


# ------------------------------------------------------------------------------------------ the channel


def mic_response(x: np.ndarray, low_hz: float, high_hz: float, tilt_db_per_octave: float) -> np.ndarray:
    """A microphone/band response: 2nd-order Butterworth band-pass and a spectral tilt around 1 kHz."""
    y = sosfiltfilt(butter(2, [low_hz, high_hz], btype="band", fs=SR, output="sos"), np.asarray(x, np.float64))
    return apply_band_gains(y, tilt_db_per_octave * np.log2(BAND_CENTRES / 1000.0))


def shared_channel(mix: np.ndarray, rng: np.random.Generator, speech, *, codec: bool) -> tuple[np.ndarray, dict]:
    """One room, one noise bed, one microphone and (if `codec`) one telephone codec over the whole mix."""
    rt60, drr = float(rng.uniform(0.25, 0.7)), float(rng.uniform(0.0, 6.0))
    y = corpus.reverberate(mix, rt60, rng, direct_to_reverb_db=drr)
    snr, kind = float(rng.uniform(15.0, 30.0)), str(rng.choice(["pink", "brown"]))
    y = corpus.add_noise(y, snr, rng, kind=kind, speech=speech)
    low, high, tilt = float(rng.uniform(80, 200)), float(rng.uniform(5000, 7500)), float(rng.uniform(-2, 1))
    y = mic_response(y, low, high, tilt)
    if codec:
        y = corpus.phone(y)
    info = {"rt60_s": round(rt60, 3), "drr_db": round(drr, 1), "snr_db": round(snr, 1), "noise": kind,
            "mic_hz": [round(low), round(high)], "tilt_db_oct": round(tilt, 2), "codec": "phone" if codec else None}
    return corpus.limit_peak(y * corpus.db_gain(-26.0) / corpus.speech_rms(y, speech)), info


def build(voices: dict[str, list[corpus.Source]], genders: dict[str, str], n: int, duration_s: float,
          rng: np.random.Generator, *, codec: bool = False, lean: int = 0) -> corpus.Conversation:
    """A conversation of n voices (already equalised; those of `genders`) picked by gender balance
    (pick_voices, `lean`), levels within +-LEVEL_DB, through one shared channel."""
    names = pick_voices(genders, n, rng, lean)
    params = corpus.Params(level_db=LEVEL_DB, turn_jitter_db=TURN_JITTER_DB, noise_floor_dbfs=-90.0)
    conv = corpus.build_conversation({s: voices[s] for s in names}, n, duration_s, rng, params)
    audio, info = shared_channel(conv.audio, rng, [(t.start, t.end) for t in conv.turns], codec=codec)
    k = sum(genders[s] == "F" for s in names)
    same, mixed = pairs(k, n)
    conv.meta.update(channel=info, voices=names, genders={s: genders[s] for s in names},
                     same_gender_pairs=same, mixed_gender_pairs=mixed)
    return corpus.Conversation(audio, conv.turns, conv.speakers, conv.meta)
