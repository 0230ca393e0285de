"""Decoding: any container/codec FFmpeg knows (wav, mp3, flac, ogg/opus, m4a/aac, webm...) via PyAV,
to 16 kHz mono float32, the only form the rest of the pipeline sees."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from shared.domain import SAMPLE_RATE


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


def decode(source: bytes | str | Path | BinaryIO) -> DecodedAudio:
    """Decode the first audio stream and resample it to 16 kHz mono float32."""
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError("the file is empty")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        source = str(source)
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            parts: list[np.ndarray] = []
            for frame in _frames(container, stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush
                parts.append(out.to_ndarray().reshape(-1))
            codec = stream.codec_context.name
            rate = stream.codec_context.sample_rate or None
            channels = stream.codec_context.channels or None
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)  # strerror: without our temp file's path
        raise AudioDecodeError(f"could not decode audio ({reason})") from exc
    samples = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise AudioDecodeError("the file contains no audio samples")
    return DecodedAudio(samples=samples, source_sample_rate=rate, source_channels=channels, codec=codec)


def _frames(container: av.container.InputContainer, stream: av.AudioStream):
    """Yield decoded frames, skipping isolated corrupt packets the way ffmpeg's CLI does."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue
