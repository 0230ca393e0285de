"""Long recordings assembled from the committed fixtures, with exact placements.

The reference turns of both fixtures (the LibriVox reader and JFK, 10 utterances) are placed one after
another, in a seeded random order, with gaps of 0.3-2.5 s, now and then a long silence (8-40 s, so
chunks and diarization regions meet stretches of nothing), and a level change of -10..+4 dB per
placement. Each placement is known exactly: which utterance, where, at what gain, by which speaker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tests.audio_fixtures import ONE_SPEAKER, SAMPLE_RATE, TWO_SPEAKERS, load_audio, load_reference

GAINS_DB = (-10.0, -6.0, 0.0, 4.0)
NOISE_DBFS = -68.0  # the fixtures' gaps hold this faint noise too, not digital silence


@dataclass(frozen=True)
class Piece:
    name: str
    speaker: str
    text: str
    samples: np.ndarray


@dataclass(frozen=True)
class Placement:
    piece: int
    start: float
    end: float
    gain_db: float


def fixture_pieces() -> list[Piece]:
    """Every reference turn of the two fixtures, as its own clip."""
    pieces = []
    for path in (TWO_SPEAKERS, ONE_SPEAKER):
        audio, ref = load_audio(path), load_reference(path)
        for i, turn in enumerate(ref["turns"]):
            clip = audio[int(turn["start"] * SAMPLE_RATE) : int(turn["end"] * SAMPLE_RATE)]
            pieces.append(Piece(f"{path.stem}#{i}", turn["speaker"], turn["text"], clip))
    return pieces


def assemble(pieces: list[Piece], minutes: float, seed: int = 8) -> tuple[np.ndarray, list[Placement]]:
    """At least `minutes` of audio made of `pieces`, and where each one went."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    placements: list[Placement] = []
    t = 0
    target = int(minutes * 60 * SAMPLE_RATE)

    def gap(seconds: float) -> None:
        nonlocal t
        n = int(seconds * SAMPLE_RATE)
        parts.append((rng.standard_normal(n) * 10 ** (NOISE_DBFS / 20)).astype(np.float32))
        t += n

    gap(1.0)
    while t < target:
        i = int(rng.integers(len(pieces)))
        gain = float(rng.choice(GAINS_DB))
        clip = np.clip(pieces[i].samples * 10 ** (gain / 20), -1.0, 1.0).astype(np.float32)
        placements.append(Placement(i, t / SAMPLE_RATE, (t + len(clip)) / SAMPLE_RATE, gain))
        parts.append(clip)
        t += len(clip)
        gap(float(rng.uniform(8.0, 40.0)) if rng.random() < 0.04 else float(rng.uniform(0.3, 2.5)))
    return np.concatenate(parts), placements


def words_in(transcript_words, start: float, end: float) -> list:
    """Words whose middle falls in [start, end]."""
    return [w for w in transcript_words if start <= (w.start + w.end) / 2 <= end]
