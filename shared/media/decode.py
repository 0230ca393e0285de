"""Decoding: any container/codec FFmpeg knows (wav, mp3, flac, ogg/opus, m4a/aac, webm...) via PyAV,
to 16 kHz mono float32, the only form the rest of the pipeline sees."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from shared.core.domain import SAMPLE_RATE
from shared.media.pcm import PcmWriter


class AudioDecodeError(ValueError):
    """The input is not audio we can decode (no audio stream, corrupt data, or empty)."""


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    source_sample_rate: int | None
    source_channels: int | None
    codec: str | None

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class AudioTooLong(AudioDecodeError):
    """The audio runs past the length the caller accepts (MAX_AUDIO_S)."""

    def __init__(self, seconds_seen: float, limit_s: float):
        self.seconds_seen = seconds_seen
        self.limit_s = limit_s
        super().__init__(f"the audio runs {seconds_seen:.0f} s or more, past the limit of {limit_s:g} s")


@dataclass(frozen=True)
class StreamInfo:
    """What a streamed decode learnt about the source, besides its samples."""

    num_samples: int
    source_sample_rate: int | None
    source_channels: int | None
    codec: str | None

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE


def decode(source: bytes | str | Path | BinaryIO) -> DecodedAudio:
    """Decode the first audio stream to 16 kHz mono float32, all in memory (short audio)."""
    parts: list[np.ndarray] = []
    info = decode_stream(source, parts.append)
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    return DecodedAudio(samples, info.source_sample_rate, info.source_channels, info.codec)


def decode_to_pcm(source: str | Path | BinaryIO, dest: str | Path, *, max_seconds: float | None = None) -> StreamInfo:
    """Decode straight into a PCM file (shared/media/pcm.py), a frame at a time: memory stays flat whatever
    the length. Raises AudioTooLong as soon as the audio passes `max_seconds` (the file is removed)."""
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    try:
        with PcmWriter(dest) as out:

            def write(samples: np.ndarray) -> None:
                if limit is not None and out.num_samples + len(samples) > limit:
                    raise AudioTooLong((out.num_samples + len(samples)) / SAMPLE_RATE, max_seconds)
                out.write(samples)

            return decode_stream(source, write, max_seconds=max_seconds)
    except BaseException:
        Path(dest).unlink(missing_ok=True)
        raise


def decode_stream(source: bytes | str | Path | BinaryIO, sink, *, max_seconds: float | None = None) -> StreamInfo:
    """Decode the first audio stream, resample to 16 kHz mono float32, and hand each piece to `sink`.
    A container whose header already gives a duration past `max_seconds` is refused before decoding."""
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError("the file is empty")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        source = str(source)
    total = 0
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            stream = container.streams.audio[0]
            declared = container.duration / av.time_base if container.duration else None
            if max_seconds is not None and declared is not None and declared > max_seconds + 1.0:
                raise AudioTooLong(declared, max_seconds)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in _frames(container, stream):
                for out in resampler.resample(frame):
                    piece = out.to_ndarray().reshape(-1)
                    total += len(piece)
                    sink(piece)
            for out in resampler.resample(None):  # flush
                piece = out.to_ndarray().reshape(-1)
                total += len(piece)
                sink(piece)
            codec = stream.codec_context.name
            rate = stream.codec_context.sample_rate or None
            channels = stream.codec_context.channels or None
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)  # strerror: without our temp file's path
        raise AudioDecodeError(f"could not decode audio ({reason})") from exc
    if total == 0:
        raise AudioDecodeError("the file contains no audio samples")
    return StreamInfo(total, rate, channels, codec)


def _frames(container: av.container.InputContainer, stream: av.AudioStream):
    """Yield decoded frames, skipping isolated corrupt packets the way ffmpeg's CLI does."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue
