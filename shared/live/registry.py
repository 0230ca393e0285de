"""The server's live sessions: shared models, per-client stream limits, and resumable streams.

A `LiveStream` is a session plus what a reconnecting client needs: every event it reported (numbered
from 1, kept for replay), the count of input bytes received (a retransmission from an earlier offset is
de-duplicated), and its audio decoder (an Opus stream goes on decoding where it stopped). When its
connection drops it is parked for STREAM_RESUME_S; a resume within that time picks it up, otherwise it
is finished and forgotten.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from shared.core.errors import live_code
from shared.live.audio_in import ContainerInput, Pcm16Input
from shared.live.events import Event
from shared.live.models import LiveModels
from shared.live.session import LiveConfig, LiveSession
from shared.pipeline.runner import Runner

LOG_EVENTS = 20_000  # events kept for replay per stream (a long session's oldest partials go first)


class TooManyStreams(Exception):
    code = live_code("too_many_streams")


class ResumeRefused(Exception):
    """No such session, or another client's."""

    code = live_code("session_not_found")


class LiveStream:
    def __init__(self, config: LiveConfig, models: LiveModels, identity: str, audio_format: str, rate: int):
        self.id = secrets.token_hex(16)
        self.identity = identity
        self.audio_format = audio_format
        self._lock = threading.Lock()
        self.log: deque[tuple[int, Event]] = deque(maxlen=LOG_EVENTS)
        self.seq = 0
        self.bytes_in = 0
        self.listener: Callable[[int, Event], None] | None = None
        self.decode_error: str | None = None
        self.session = LiveSession(models, config, self._record)
        if audio_format == "pcm16":
            self.input: Pcm16Input | ContainerInput = Pcm16Input(self.session.feed, rate)
        else:
            self.input = ContainerInput(self.session.feed, on_error=self._undecodable)
        self.connected = False
        self.parked_until = 0.0

    def write(self, data: bytes, offset: int | None = None) -> int:
        """Take input bytes that start at byte `offset` of the stream (default: where it stands);
        bytes already received are skipped. Returns the stream's byte count."""
        with self._lock:
            at = self.bytes_in if offset is None else offset
            if at > self.bytes_in:
                raise ValueError(f"offset {at} is past the {self.bytes_in} bytes received")
            fresh = data[max(self.bytes_in - at, 0) :]
            self.bytes_in += len(fresh)
        if fresh:
            self.input.write(fresh)
        return self.bytes_in

    def since(self, seq: int) -> list[tuple[int, Event]]:
        with self._lock:
            return [(n, e) for n, e in self.log if n > seq]

    def attach(self, listener: Callable[[int, Event], None], after: int = 0) -> list[tuple[int, Event]]:
        """Connect a listener; returns the events after `after` it has not seen (to send first)."""
        with self._lock:
            self.listener, self.connected = listener, True
            return [(n, e) for n, e in self.log if n > after]

    def detach(self) -> None:
        with self._lock:
            self.listener, self.connected = None, False

    def _record(self, event: Event) -> None:
        with self._lock:
            self.seq += 1
            self.log.append((self.seq, event))
            listener, seq = self.listener, self.seq
        if listener is not None:
            listener(seq, event)

    def _undecodable(self, message: str) -> None:
        self.decode_error = message
        listener = self.listener
        if listener is not None:
            listener(0, None)  # the adapter reads decode_error

    def finish(self, timeout: float | None = None) -> bool:
        self.input.close()
        return self.session.finish(timeout)


class LiveHub:
    def __init__(self, runner: Runner, settings):
        self.settings = settings
        self.models = LiveModels(runner)
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}  # connected streams per client identity
        self._streams: dict[str, LiveStream] = {}

    # --- limits ---
    def acquire(self, identity: str) -> None:
        with self._lock:
            if self._open.get(identity, 0) >= self.settings.stream_max_per_key:
                raise TooManyStreams(f"at most {self.settings.stream_max_per_key} live streams at once")
            self._open[identity] = self._open.get(identity, 0) + 1

    def release(self, identity: str) -> None:
        with self._lock:
            left = self._open.get(identity, 1) - 1
            if left > 0:
                self._open[identity] = left
            else:
                self._open.pop(identity, None)

    def streams_open(self) -> int:
        with self._lock:
            return sum(self._open.values())

    # --- resumable streams ---
    def open(self, config: LiveConfig, identity: str, audio_format: str, rate: int) -> LiveStream:
        self.sweep()  # parked streams past their resume window go whenever a stream opens, resumes or drops
        stream = LiveStream(config, self.models, identity, audio_format, rate)
        stream.parked_until = time.monotonic() + self.settings.stream_resume_s  # until its socket attaches
        with self._lock:
            self._streams[stream.id] = stream
        return stream

    def resume(self, session_id: str, identity: str) -> LiveStream:
        self.sweep()
        with self._lock:
            stream = self._streams.get(session_id)
            if stream is None or stream.identity != identity:
                raise ResumeRefused("no such session to resume (it ended or expired)")
            return stream  # still attached to a connection that has not noticed its drop: taken over

    def park(self, stream: LiveStream) -> None:
        """The connection dropped: keep the stream for a resume, until STREAM_RESUME_S have passed."""
        stream.detach()
        stream.parked_until = time.monotonic() + self.settings.stream_resume_s
        self.sweep()

    def end(self, stream: LiveStream) -> None:
        with self._lock:
            self._streams.pop(stream.id, None)

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [s for s in self._streams.values() if not s.connected and s.parked_until <= now]
            for s in expired:
                del self._streams[s.id]
        for s in expired:
            s.finish(timeout=0)

    def close(self) -> None:
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.finish(timeout=0)
