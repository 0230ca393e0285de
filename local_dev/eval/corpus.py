"""Synthetic conversations with exact references, and the degradations `make eval` applies.

Pure signal code (numpy/scipy, no models, no files): local_dev/eval/sets.py feeds it the real voices of
``../shared/data/librispeech_voices`` and caches what it builds; tests feed it synthetic signals.

A conversation is built, deterministically from its own random generator, by placing pieces of each
speaker's recordings on one timeline:
- turns of 1-12 s (log-normal, median 3.5 s), cut at the speech/pause boundaries of the source so no
  word is cut, every speaker talking at least once, then the next speaker drawn by "talkativeness";
- gaps of 0.1-1.2 s, some longer (1.2-3 s); about one turn change in eight overlaps by 0.2-1 s;
- backchannels: 0.3-1 s snippets cut from another speaker's speech, placed over the current turn
  (overlap) or just after it, alone;
- one level per speaker, +-10 dB around -26 dBFS (speech RMS), +-1.5 dB per turn;
- a faint noise floor (-70 dBFS) so gaps are not digital silence.
The reference is every speech region of every placed piece (the source's own pauses longer than
0.25 s are not speech), so DER and "missed speech" are exact up to that energy detection on clean audio.

Degradations (for copies): additive noise at a given speech SNR (white, pink or brown), reverberation
with a synthetic exponentially decaying impulse response, band-limited 300-3400 Hz "phone" audio with
G.711-like mu-law quantisation, and plain attenuation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, fftconvolve, sosfiltfilt

SR = 16_000
FRAME = SR // 100  # 10 ms energy frames
FADE_S = 0.01
SPEECH_DBFS = -26.0  # speech RMS a source is levelled to before its speaker's offset


# ----------------------------------------------------------------------------------------------- speech


def speech_regions(
    x: np.ndarray,
    *,
    within: list[tuple[float, float]] | None = None,
    min_gap_s: float = 0.25,
    min_len_s: float = 0.08,
    pad_s: float = 0.04,
) -> list[tuple[float, float]]:
    """Speech regions (seconds) of a clean recording by frame energy: frames above
    max(floor + 6 dB, loud - 38 dB) (floor: 10th percentile, loud: 97th), and inside `within` when given
    (a model VAD's generous regions, to drop clicks and breaths in pauses), pauses shorter than
    `min_gap_s` bridged, blips shorter than `min_len_s` dropped, `pad_s` added each side."""
    n = len(x) // FRAME
    if n == 0:
        return []
    power = (x[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2).mean(1)
    db = 10 * np.log10(power + 1e-12)
    floor, loud = np.percentile(db, 10), np.percentile(db, 97)
    active = db > max(floor + 6.0, loud - 38.0)
    if within is not None:
        allowed = np.zeros(n, bool)
        for a, b in within:
            allowed[int(a * SR) // FRAME : int(np.ceil(b * SR / FRAME))] = True
        active &= allowed
    regions: list[list[float]] = []
    for start, end in _runs(active):
        a, b = start * FRAME / SR, end * FRAME / SR
        if regions and a - regions[-1][1] < min_gap_s:
            regions[-1][1] = b
        else:
            regions.append([a, b])
    total = len(x) / SR
    return [
        (max(0.0, a - pad_s), min(total, b + pad_s)) for a, b in regions if b - a >= min_len_s
    ]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def speech_rms(x: np.ndarray, regions: list[tuple[float, float]]) -> float:
    parts = [x[int(a * SR) : int(b * SR)] for a, b in regions] or [x]
    joined = np.concatenate(parts).astype(np.float64)
    return float(np.sqrt((joined**2).mean() + 1e-20))


def db_gain(db: float) -> float:
    return float(10 ** (db / 20))


# ------------------------------------------------------------------------------------------ conversations


@dataclass
class Source:
    """One recording of one speaker, levelled to SPEECH_DBFS over its speech."""

    speaker: str
    audio: np.ndarray
    regions: list[tuple[float, float]]

    @classmethod
    def of(cls, speaker: str, audio: np.ndarray, within: list[tuple[float, float]] | None = None) -> Source:
        audio = np.asarray(audio, np.float32)
        regions = speech_regions(audio, within=within) or [(0.0, len(audio) / SR)]
        gain = db_gain(SPEECH_DBFS) / speech_rms(audio, regions)
        return cls(speaker, (audio * gain).astype(np.float32), regions)


@dataclass
class Params:
    turn_median_s: float = 3.5
    turn_sigma: float = 0.7  # of log(turn length)
    turn_range_s: tuple[float, float] = (1.0, 12.0)
    gap_s: tuple[float, float] = (0.1, 1.2)
    long_gap_s: tuple[float, float] = (1.2, 3.0)
    long_gap_p: float = 0.15
    overlap_p: float = 0.12
    overlap_s: tuple[float, float] = (0.2, 1.0)
    backchannel_p: float = 0.3  # per turn of >= 3 s, with >= 2 speakers
    backchannel_s: tuple[float, float] = (0.3, 1.0)
    level_db: float = 10.0  # speaker levels uniform in +-level_db
    turn_jitter_db: float = 1.5
    noise_floor_dbfs: float = -70.0


@dataclass
class RefTurn:
    start: float
    end: float
    speaker: str


@dataclass
class Conversation:
    audio: np.ndarray
    turns: list[RefTurn]  # speech regions, sorted by start
    speakers: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / SR


class _Speaker:
    """A speaker's material, handed out piece by piece (fresh speech first, then reused)."""

    def __init__(self, sources: list[Source], rng: np.random.Generator):
        self.sources = sources
        self.order = [(i, j) for i, s in enumerate(sources) for j in range(len(s.regions))]
        self.pos = int(rng.integers(len(self.order)))

    def piece(self, target_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """Consecutive speech regions of one source, from a region start to a region end, about
        `target_s` long (at least one region; never past the source's end)."""
        i, j = self.order[self.pos % len(self.order)]
        src = self.sources[i]
        a = src.regions[j][0]
        k = j
        while k + 1 < len(src.regions) and src.regions[k][1] - a < target_s:
            k += 1
        self.pos += k - j + 1
        b = src.regions[k][1]
        regions = [(max(ra, a) - a, min(rb, b) - a) for ra, rb in src.regions[j : k + 1]]
        return src.audio[int(a * SR) : int(b * SR)], regions

    def snippet(self, length_s: float, rng: np.random.Generator) -> np.ndarray | None:
        """`length_s` cut from inside one speech region long enough to hold it."""
        spans = [(s, a, b) for s in self.sources for a, b in s.regions if b - a >= length_s + 0.1]
        if not spans:
            return None
        src, a, b = spans[int(rng.integers(len(spans)))]
        start = rng.uniform(a + 0.05, b - length_s - 0.05)
        return src.audio[int(start * SR) : int(start * SR) + int(length_s * SR)]


def build_conversation(
    voices: dict[str, list[Source]],
    n_speakers: int,
    duration_s: float,
    rng: np.random.Generator,
    params: Params | None = None,
) -> Conversation:
    """Place `n_speakers` voices (drawn from `voices`) on a timeline about `duration_s` long."""
    p = params or Params()
    names = [str(s) for s in rng.choice(sorted(voices), size=n_speakers, replace=False)]
    speakers = {s: _Speaker(voices[s], rng) for s in names}
    level = {s: rng.uniform(-p.level_db, p.level_db) for s in names}
    weight = rng.dirichlet(np.full(n_speakers, 2.0)) + 0.05
    first_round = [str(s) for s in rng.permutation(names)]
    placed: list[tuple[float, np.ndarray, float]] = []  # (start s, audio, gain)
    turns: list[RefTurn] = []
    meta = {"backchannels": 0, "overlaps": 0}

    def place(at: float, audio: np.ndarray, speaker: str, regions: list[tuple[float, float]]) -> float:
        gain = db_gain(level[speaker] + rng.uniform(-p.turn_jitter_db, p.turn_jitter_db))
        placed.append((at, _fade(audio), gain))
        turns.extend(RefTurn(at + a, at + b, speaker) for a, b in regions)
        return at + len(audio) / SR

    t, prev, prev_start, prev_end = rng.uniform(0.2, 1.0), None, 0.0, 0.0
    while True:
        introducing = bool(first_round)  # every voice speaks once before the conversation may end
        if introducing:
            who = first_round.pop(0)
        else:
            w = np.array([0.0 if (s == prev and n_speakers > 1) else weight[i] for i, s in enumerate(names)])
            who = names[int(rng.choice(n_speakers, p=w / w.sum()))]
        target = float(np.clip(rng.lognormal(np.log(p.turn_median_s), p.turn_sigma), *p.turn_range_s))
        audio, regions = speakers[who].piece(target)
        length = len(audio) / SR
        if turns and t + length > duration_s and not introducing:
            break
        start = t
        if prev is not None and n_speakers > 1 and rng.random() < p.overlap_p:
            start = max(prev_start + 0.5 * (prev_end - prev_start), prev_end - rng.uniform(*p.overlap_s))
            meta["overlaps"] += 1
        end = place(start, audio, who, regions)
        t = prev_end = max(prev_end, end)
        prev, prev_start = who, start
        if n_speakers > 1 and length >= 3.0 and rng.random() < p.backchannel_p:
            other = str(rng.choice([s for s in names if s != who]))
            snip = speakers[other].snippet(rng.uniform(*p.backchannel_s), rng)
            if snip is not None:
                bc_len = len(snip) / SR
                if rng.random() < 0.5:  # over the turn
                    at = rng.uniform(start + 1.0, max(start + 1.0, end - bc_len - 0.5))
                    place(at, snip, other, [(0.0, bc_len)])
                    meta["overlaps"] += 1
                else:  # just after it, alone
                    at = t + rng.uniform(*p.gap_s)
                    t = prev_end = place(at, snip, other, [(0.0, bc_len)])
                    prev, prev_start = other, at
                meta["backchannels"] += 1
        long_gap = rng.random() < p.long_gap_p
        t += rng.uniform(*(p.long_gap_s if long_gap else p.gap_s))
    last = max(at + len(a) / SR for at, a, _ in placed)
    n = int((last + rng.uniform(0.3, 1.0)) * SR)
    mix = np.zeros(n, np.float64)
    for at, audio, gain in placed:
        i = round(at * SR)
        mix[i : i + len(audio)] += audio * gain
    mix += rng.standard_normal(n) * db_gain(p.noise_floor_dbfs)
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    turns.sort(key=lambda r: (r.start, r.speaker))
    meta.update(levels_db={s: round(level[s], 2) for s in names}, pieces=len(placed))
    return Conversation(mix.astype(np.float32), turns, names, meta)


def _fade(x: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * SR), len(x) // 2)
    if n == 0:
        return x
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
    x = x.astype(np.float64, copy=True)
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


def overlap_seconds(turns: list[RefTurn]) -> float:
    """Seconds where two or more speakers talk at once."""
    events = sorted([(r.start, 1) for r in turns] + [(r.end, -1) for r in turns])
    depth, last, total = 0, 0.0, 0.0
    for time, step in events:
        if depth >= 2:
            total += time - last
        depth, last = depth + step, time
    return total


def to_rttm(turns: list[RefTurn], uri: str) -> str:
    return "".join(
        f"SPEAKER {uri} 1 {r.start:.3f} {r.end - r.start:.3f} <NA> <NA> {r.speaker} <NA> <NA>\n" for r in turns
    )


# ---------------------------------------------------------------------------------------------- degrade


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2) noise."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / SR)
        f[0] = f[1]
        spectrum /= np.sqrt(f) if kind == "pink" else f
        white = np.fft.irfft(spectrum, n)
    return white / np.sqrt((white**2).mean())


def add_noise(
    x: np.ndarray,
    snr_db: float,
    rng: np.random.Generator,
    *,
    kind: str = "pink",
    speech: list[tuple[float, float]] | None = None,
) -> np.ndarray:
    """x plus noise at `snr_db` below the speech power (over `speech` regions, else the whole clip)."""
    noise = colored_noise(len(x), kind, rng) * speech_rms(x, speech or []) * db_gain(-snr_db)
    return (x.astype(np.float64) + noise).astype(np.float32)


def impulse_response(rt60_s: float, rng: np.random.Generator, *, direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """Direct path, then exponentially decaying noise (60 dB down after `rt60_s`) from 5 ms on."""
    n = int(rt60_s * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60_s)
    tail[: int(0.005 * SR)] = 0.0
    tail *= db_gain(-direct_to_reverb_db) / np.sqrt((tail**2).sum())
    tail[0] = 1.0
    return tail


def reverberate(x: np.ndarray, rt60_s: float, rng: np.random.Generator, **kw) -> np.ndarray:
    """x through a synthetic room, at the same RMS."""
    wet = fftconvolve(x.astype(np.float64), impulse_response(rt60_s, rng, **kw))[: len(x)]
    wet *= np.sqrt((x.astype(np.float64) ** 2).mean() / ((wet**2).mean() + 1e-20))
    return limit_peak(wet)


def phone(x: np.ndarray, *, low: float = 300.0, high: float = 3400.0, mu: float = 255.0) -> np.ndarray:
    """Telephone band (4th-order Butterworth 300-3400 Hz) and 8-bit mu-law quantisation."""
    band = sosfiltfilt(butter(4, [low, high], btype="band", fs=SR, output="sos"), x.astype(np.float64))
    peak = max(np.abs(band).max(), 1e-9)
    y = band / peak
    code = np.round(np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) * 127) / 127
    y = np.sign(code) * np.expm1(np.abs(code) * np.log1p(mu)) / mu
    return (y * peak).astype(np.float32)


def attenuate(x: np.ndarray, db: float) -> np.ndarray:
    return (x.astype(np.float64) * db_gain(db)).astype(np.float32)


def limit_peak(y: np.ndarray) -> np.ndarray:
    peak = np.abs(y).max()
    return (y * (0.95 / peak if peak > 0.95 else 1.0)).astype(np.float32)


def degrade(x: np.ndarray, condition: str, rng: np.random.Generator, speech=None) -> tuple[np.ndarray, dict]:
    """One named degradation with its random parameters drawn from `rng`: noise (5-15 dB SNR),
    reverb (RT60 0.3-0.9 s), phone (band-limited, plus noise at 25 dB), quiet (-20 dB)."""
    if condition == "noise":
        snr, kind = float(rng.uniform(5, 15)), str(rng.choice(["white", "pink", "brown"]))
        return limit_peak(add_noise(x, snr, rng, kind=kind, speech=speech)), {"snr_db": round(snr, 2), "noise": kind}
    if condition == "reverb":
        rt60, drr = float(rng.uniform(0.3, 0.9)), float(rng.uniform(-3, 6))
        return reverberate(x, rt60, rng, direct_to_reverb_db=drr), {"rt60_s": round(rt60, 3), "drr_db": round(drr, 1)}
    if condition == "phone":
        return phone(add_noise(x, 25.0, rng, kind="pink", speech=speech)), {"band_hz": [300, 3400], "snr_db": 25}
    if condition == "quiet":
        return attenuate(x, -20.0), {"gain_db": -20}
    raise ValueError(f"unknown condition {condition!r}")
