"""Audio the stages read: 16 kHz mono, by reference; the one place that reads spans of it.

An upload is decoded once into a raw PCM file next to the clip (`<clip>.pcm`): 16-bit signed
little-endian (`s16le`), half the bytes of float32 (a 6 h recording: 691 MB instead of 1.38 GB). That
is the precision faster-whisper's own decoder gives Whisper (it resamples to s16 and divides by
32768), and a 16-bit source at 16 kHz round-trips exactly. Files written before (`f32le`, float32) are
still read: the format travels with the reference. Readers always get float32 in [-1, 1).

Stages are handed a `PcmRef` (the file's path, its length and its sample format), never the samples,
and read only the spans they need, so a worker process or a Modal container holds one batch's audio at
a time whatever the recording's length. `ArrayAudio` puts samples already in memory (tests, live
streams) behind the same interface, for the in-process runner.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.core.domain import SAMPLE_RATE, Chunk

S16 = "s16le"  # what every PCM file is written as
F32 = "f32le"  # PCM files written before int16 (their clip's metadata has no pcm_format)
FORMATS = {S16: np.dtype("<i2"), F32: np.dtype("<f4")}
_S16_SCALE = 32768.0  # faster-whisper's (and FFmpeg's) s16 <-> float mapping


def to_stored(samples: np.ndarray, pcm_format: str = S16) -> bytes:
    """Float samples as the bytes of a PCM file: s16 rounds to the nearest step and clips at full scale."""
    samples = np.asarray(samples, dtype=np.float32)
    if pcm_format == F32:
        return np.ascontiguousarray(samples, dtype=FORMATS[F32]).tobytes()
    scaled = np.multiply(samples, np.float32(_S16_SCALE))
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype(FORMATS[S16]).tobytes()


def from_stored(raw: np.ndarray) -> np.ndarray:
    """Samples read from a PCM file (either format) as float32."""
    if raw.dtype == FORMATS[S16]:
        return raw.astype(np.float32) * np.float32(1.0 / _S16_SCALE)  # a power of two: exact
    return raw.astype(np.float32, copy=False)


@dataclass(frozen=True)
class PcmRef:
    """A stored PCM file: what crosses process and network boundaries instead of samples."""

    path: str
    num_samples: int
    pcm_format: str = S16

    @classmethod
    def of(cls, path: str | Path, pcm_format: str = S16) -> "PcmRef":
        return cls(str(path), os.stat(path).st_size // FORMATS[pcm_format].itemsize, pcm_format)

    @property
    def nbytes(self) -> int:
        return self.num_samples * FORMATS[self.pcm_format].itemsize

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def read(self, start: int = 0, end: int | None = None) -> np.ndarray:
        start, end = _clamp(start, end, self.num_samples)
        if end <= start:
            return np.zeros(0, np.float32)
        dtype = FORMATS[self.pcm_format]
        with open(self.path, "rb") as f:
            return from_stored(np.fromfile(f, dtype=dtype, count=end - start, offset=start * dtype.itemsize))


@dataclass(frozen=True, eq=False)
class ArrayAudio:
    """Samples already in memory, read like a stored file."""

    samples: np.ndarray

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def read(self, start: int = 0, end: int | None = None) -> np.ndarray:
        start, end = _clamp(start, end, self.num_samples)
        return np.asarray(self.samples[start:end], dtype=np.float32)

    def only(self, spans: list[tuple[int, int]]) -> "SpanAudio":
        """Just these sample spans: what a chunk of in-memory audio takes to another process."""
        return SpanAudio(self.num_samples, tuple((a, self.read(a, b)) for a, b in spans))


@dataclass(frozen=True, eq=False)
class SpanAudio:
    """Some spans of a clip's samples, read like the whole clip (silence outside the spans)."""

    num_samples: int
    pieces: tuple[tuple[int, np.ndarray], ...]

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def read(self, start: int = 0, end: int | None = None) -> np.ndarray:
        start, end = _clamp(start, end, self.num_samples)
        out = np.zeros(end - start, np.float32)
        for first, samples in self.pieces:
            a, b = max(start, first), min(end, first + len(samples))
            if a < b:
                out[a - start : b - start] = samples[a - first : b - first]
        return out


AudioSource = PcmRef | ArrayAudio | SpanAudio


def as_audio(audio: "AudioSource | np.ndarray") -> AudioSource:
    """Accept a bare array wherever an audio source is expected."""
    if isinstance(audio, (PcmRef, ArrayAudio, SpanAudio)):
        return audio
    return ArrayAudio(np.asarray(audio, dtype=np.float32).reshape(-1))


def read_seconds(audio: AudioSource, start: float, end: float) -> np.ndarray:
    return audio.read(seconds_to_sample(start), seconds_to_sample(end))


def seconds_to_sample(t: float) -> int:
    """The sample at clip time `t`; rounding, not truncation, so 0.29 s is sample 4640, not 4639."""
    return max(0, int(round(t * SAMPLE_RATE)))


def cut(chunk: Chunk, audio: "AudioSource | np.ndarray") -> np.ndarray:
    """A chunk's audio, read span by span from the clip's audio (long pauses cut out)."""
    source = as_audio(audio)
    parts = [read_seconds(source, a, b) for a, b in chunk.spans()]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class ChunkAudio:
    """A chunk and the clip audio it is cut from: the unit of transcription work.

    `audio` is a reference (a stored PCM file, or samples in memory); the chunk's own samples are read
    when a worker needs them, so a batch of these is a few hundred bytes to send.
    """

    chunk: Chunk
    audio: AudioSource

    def __post_init__(self) -> None:
        if isinstance(self.audio, np.ndarray):  # a bare array is the clip's samples
            object.__setattr__(self, "audio", as_audio(self.audio))

    @property
    def samples(self) -> np.ndarray:
        return cut(self.chunk, self.audio)

    def __reduce__(self):
        # Sent to another process, a chunk of in-memory audio takes its own samples, not the clip's.
        audio = self.audio
        if isinstance(audio, ArrayAudio):
            audio = audio.only([(seconds_to_sample(a), seconds_to_sample(b)) for a, b in self.chunk.spans()])
        return (ChunkAudio, (self.chunk, audio))


def blocks(audio: AudioSource, block_samples: int) -> Iterable[tuple[int, np.ndarray]]:
    """(first sample, samples) for consecutive blocks of the whole source."""
    for start in range(0, audio.num_samples, block_samples):
        yield start, audio.read(start, start + block_samples)


class PcmWriter:
    """Appends float samples to a PCM file, stored as `pcm_format` (the streamed decode writes through this)."""

    def __init__(self, path: str | Path, pcm_format: str = S16):
        self.path = Path(path)
        self.pcm_format = pcm_format
        self._file = open(self.path, "wb")
        self.num_samples = 0

    def write(self, samples: np.ndarray) -> None:
        self._file.write(to_stored(samples, self.pcm_format))
        self.num_samples += len(samples)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "PcmWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clamp(start: int, end: int | None, n: int) -> tuple[int, int]:
    start = min(max(0, int(start)), n)
    end = n if end is None else min(max(start, int(end)), n)
    return start, end
