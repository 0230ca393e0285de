"""Live audio in: bytes as a client sends them -> 16 kHz mono float32 samples for the engine.

- `Pcm16Input`: raw little-endian PCM16 mono at any rate (the OpenAI Realtime API sends 24 kHz),
  resampled by PyAV's resampler, which keeps its filter state from one frame to the next.
- `ContainerInput`: an Ogg or WebM stream with Opus in it, as a browser's MediaRecorder produces. Its
  pieces do not decode alone, so one PyAV demuxer reads the whole stream from a pipe, on its own thread,
  as the bytes arrive. The pipe is bounded: the writer asks `has_room()` before each piece and waits
  (back-pressure) while `max_bytes` or more wait to be decoded, so it holds at most that plus one piece;
  the decoder itself waits while its sink does (the session's pace, shared/live/intake.py). What the
  demuxer buffers inside (its probe, a block being assembled) is bounded too: a stream from which
  `2 * max_bytes` are read without a sample of audio coming out is refused as undecodable.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from shared.core.domain import SAMPLE_RATE

log = logging.getLogger(__name__)

Sink = Callable[[np.ndarray], None]


class AudioFormatError(ValueError):
    """The stream is not audio in the format the client announced."""


class Pcm16Input:
    def __init__(self, sink: Sink, rate: int = SAMPLE_RATE):
        self.sink = sink
        self.rate = rate
        self._odd = b""
        self._resampler = _resampler() if rate != SAMPLE_RATE else None

    def write(self, data: bytes) -> None:
        data = self._odd + data
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        if not usable:
            return
        pcm = np.frombuffer(data[:usable], dtype="<i2")
        if self._resampler is None:
            self.sink(pcm.astype(np.float32) / 32768.0)
            return
        import av

        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        self._emit(self._resampler.resample(frame))

    def close(self) -> None:
        if self._resampler is not None:
            self._emit(self._resampler.resample(None))

    def _emit(self, frames) -> None:
        samples = [f.to_ndarray().reshape(-1) for f in frames]
        if samples:
            self.sink(np.concatenate(samples).astype(np.float32, copy=False))


class ContainerInput:
    """Decodes an Ogg/WebM (Opus, or any codec PyAV reads) stream written to it piece by piece.

    `on_error(message)` is called (on the decoder thread) if the bytes are not a stream PyAV can read.
    """

    def __init__(self, sink: Sink, on_error: Callable[[str], None] | None = None, max_bytes: int = 1 << 20):
        self.sink = sink
        self.on_error = on_error
        self.max_bytes = max_bytes
        self._pipe = _Pipe(read_limit=2 * max_bytes)
        self._thread = threading.Thread(target=self._decode, name="live-decode", daemon=True)
        self._thread.start()

    def has_room(self) -> bool:
        """Fewer than `max_bytes` wait to be decoded: the next piece may be written."""
        return self._pipe.queued < self.max_bytes

    @property
    def queued(self) -> int:
        return self._pipe.queued

    def write(self, data: bytes) -> None:
        self._pipe.put(data)

    def close(self, timeout: float = 10.0) -> None:
        """End of the stream: decode what is left, then return (blocks up to `timeout`: call it off the loop)."""
        self._pipe.put(None)
        self._thread.join(timeout)

    def abort(self) -> None:
        """Nobody will hear the rest: drop the bytes not decoded yet; the decoder ends on its own (no wait)."""
        self._pipe.drain()

    def _decode(self) -> None:
        import av

        try:
            with av.open(self._pipe, mode="r") as container:
                if not container.streams.audio:
                    raise AudioFormatError("the stream has no audio track")
                resampler = _resampler()
                for frame in container.decode(audio=0):
                    frame.pts = None  # browsers' timestamps jump; the resampler needs none
                    self._emit(resampler.resample(frame))
                self._emit(resampler.resample(None))
            if self._pipe.overread:
                raise AudioFormatError(f"{self._pipe.read_limit} bytes read without audio")
        except Exception as exc:  # noqa: BLE001 - whatever PyAV says, the client sent something unreadable
            log.info("live stream could not be decoded: %r", exc)
            if self.on_error is not None:
                self.on_error("the audio stream could not be decoded (expected Ogg or WebM with Opus)")
        finally:
            self._pipe.drain()

    def _emit(self, frames) -> None:
        samples = [f.to_ndarray().reshape(-1) for f in frames]
        if samples:
            self._pipe.unproductive = 0
            self.sink(np.concatenate(samples).astype(np.float32, copy=False))


class _Pipe(io.RawIOBase):
    """A blocking, read-only file for PyAV: `read` waits for bytes written by the socket's side. Past
    `read_limit` bytes read since the decoder last produced audio (`unproductive`), it reads as ended."""

    def __init__(self, read_limit: int):
        self._cond = threading.Condition()
        self._chunks: deque[memoryview] = deque()
        self._closed_for_writing = False
        self.queued = 0  # bytes written and not read yet
        self.read_limit = read_limit
        self.unproductive = 0
        self.overread = False

    def put(self, data: bytes | None) -> None:
        with self._cond:
            if data is None:
                self._closed_for_writing = True
            elif not self._closed_for_writing:
                self._chunks.append(memoryview(bytes(data)))  # a view: reading part of it copies nothing
                self.queued += len(data)
            self._cond.notify_all()

    def drain(self) -> None:
        with self._cond:
            self._closed_for_writing = True
            self._chunks.clear()
            self.queued = 0
            self._cond.notify_all()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._chunks or self._closed_for_writing)
            if self.unproductive >= self.read_limit:
                self.overread = True
                return 0
            if not self._chunks:
                return 0  # end of stream
            chunk = self._chunks[0]
            n = min(len(buffer), len(chunk), self.read_limit - self.unproductive)
            self.unproductive += n
            buffer[:n] = chunk[:n]
            if n == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[n:]
            self.queued -= n
            return n


def _resampler():
    import av

    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
