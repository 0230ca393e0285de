"""The server's live sessions: shared models, per-client stream limits, and resumable streams.

A `LiveStream` is a session plus what a reconnecting client needs: every event it reported (numbered
from 1, kept for replay), the count of input bytes received (a retransmission from an earlier offset is
de-duplicated), its audio decoder (an Opus stream goes on decoding where it stopped) and its pace
(shared/live/intake.py). When its connection drops it is parked for STREAM_RESUME_S; a resume within
that time picks it up (and the connection it was attached to, if still open, lets go of it), otherwise
it is abandoned and forgotten, on a thread of its own (a decoder may take a moment to stop).

Slots: a /v1/realtime connection holds one while it is open; a /ws/stream stream holds one from its
open until it ends or expires, parked or not (its resumes take none). At most STREAM_MAX_PER_KEY per
client identity (`too_many_streams`) and STREAM_MAX_TOTAL in all (`server_busy`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from shared.core.errors import live_code
from shared.live.audio_in import ContainerInput, Pcm16Input
from shared.live.events import Event
from shared.live.intake import Intake, Pace
from shared.live.models import LiveModels
from shared.live.session import LiveConfig, LiveSession
from shared.pipeline.identify import KnownVoice
from shared.pipeline.runner import Runner

LOG_EVENTS = 20_000  # events kept for replay per stream (a long session's oldest partials go first)


class TooManyStreams(Exception):
    code = live_code("too_many_streams")


class ServerBusy(Exception):
    code = live_code("server_busy")


class ResumeRefused(Exception):
    """No such session, or another client's."""

    code = live_code("session_not_found")


class LiveStream:
    def __init__(self, config: LiveConfig, models: LiveModels, identity: str, audio_format: str, rate: int,
                 pace: Pace | None = None, max_undecoded_bytes: int = 1 << 20, known: Sequence[KnownVoice] = ()):
        self.id = secrets.token_hex(16)
        self.identity = identity
        self.audio_format = audio_format
        self._lock = threading.Lock()
        self.log: deque[tuple[int, Event]] = deque(maxlen=LOG_EVENTS)
        self.seq = 0
        self.bytes_in = 0
        self.listener: Callable[[int, Event], None] | None = None
        self.decode_error: str | None = None
        self.session = LiveSession(models, config, self._record, known)
        self.intake = Intake(pace or Pace(), lambda: self.session.received, lambda: self.session.pending_finals)
        if audio_format == "pcm16":
            self.input: Pcm16Input | ContainerInput = Pcm16Input(self.session.feed, rate)
        else:
            self.input = ContainerInput(self._decoded, on_error=self._undecodable, max_bytes=max_undecoded_bytes)
        self.connected = False
        self.parked_until = 0.0

    def wait_s(self) -> float:
        """0: the next input bytes may be written now (else: seconds to wait before asking again). PCM16
        goes straight to the session, at its pace; an Opus stream's bytes wait in the decoder's bounded
        pipe, and the decoder keeps the session's pace (`_decoded`)."""
        if isinstance(self.input, ContainerInput):
            return 0.0 if self.input.has_room() else 0.02
        return self.intake.wait_s()

    def _decoded(self, samples) -> None:
        """The decoder's samples, at the session's pace; none while the stream is parked (nobody hears it
        until a resume, which finds the decoder where it stopped)."""
        self.intake.wait_blocking(lambda: self.session.closed, paused=lambda: not self.connected)
        self.session.feed(samples)

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
        """Connect a listener (in place of any other: that connection has been taken over, and checks
        `listener` to let go); returns the events after `after` it has not seen (to send first)."""
        with self._lock:
            self.listener, self.connected = listener, True
            self.intake.connect()
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
        """The client's end: decode what is left (at the session's pace), the last finals, all within
        `timeout` (blocks: call it off the event loop)."""
        if isinstance(self.input, ContainerInput):
            deadline = None if timeout is None else time.monotonic() + timeout
            self.input.close(timeout)
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        else:
            self.input.close()
        return self.session.finish(timeout)

    def abandon(self) -> None:
        """Nobody will hear it: drop what is open and what is not decoded yet, make no more finals."""
        self.session.close()
        if isinstance(self.input, ContainerInput):
            self.input.abort()


class LiveHub:
    def __init__(self, runner: Runner, settings):
        self.settings = settings
        self.models = LiveModels(runner)
        self.pace = Pace.from_settings(settings)
        self._lock = threading.Lock()
        self._slots: dict[str, int] = {}  # slots held per client identity (module docstring)
        self._streams: dict[str, LiveStream] = {}

    # --- limits ---
    def acquire(self, identity: str) -> None:
        """Take a slot for `identity`, or raise ServerBusy / TooManyStreams."""
        self.sweep()  # parked streams past their resume window give their slots back first
        with self._lock:
            if sum(self._slots.values()) >= self.settings.stream_max_total:
                raise ServerBusy(f"the server has its {self.settings.stream_max_total} live streams open: "
                                 "try again later")
            if self._slots.get(identity, 0) >= self.settings.stream_max_per_key:
                raise TooManyStreams(f"at most {self.settings.stream_max_per_key} live streams at once "
                                     "(a dropped one waiting for its resume counts)")
            self._slots[identity] = self._slots.get(identity, 0) + 1

    def release(self, identity: str) -> None:
        with self._lock:
            self._release(identity)

    def _release(self, identity: str) -> None:
        left = self._slots.get(identity, 1) - 1
        if left > 0:
            self._slots[identity] = left
        else:
            self._slots.pop(identity, None)

    def streams_open(self) -> int:
        with self._lock:
            return sum(self._slots.values())

    # --- resumable streams ---
    def open(self, config: LiveConfig, identity: str, audio_format: str, rate: int,
             known: Sequence[KnownVoice] = ()) -> LiveStream:
        """A new stream holding a slot of `identity` until it ends or expires (ServerBusy, TooManyStreams);
        `known`: the enrolled voices that name its speakers."""
        self.acquire(identity)
        try:
            stream = LiveStream(config, self.models, identity, audio_format, rate, self.pace,
                                max_undecoded_bytes=self.settings.stream_max_frame_bytes, known=known)
        except BaseException:
            self.release(identity)
            raise
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
            if self._streams.pop(stream.id, None) is not None:
                self._release(stream.identity)

    def sweep(self) -> None:
        """Forget the parked streams past their resume window; abandon them off the caller's thread."""
        now = time.monotonic()
        with self._lock:
            expired = [s for s in self._streams.values() if not s.connected and s.parked_until <= now]
            for s in expired:
                del self._streams[s.id]
                self._release(s.identity)
        if expired:
            _abandon(expired)

    def close(self) -> None:
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
            self._slots.clear()
        _abandon(streams)


def _abandon(streams: list[LiveStream]) -> None:
    def run() -> None:
        for s in streams:
            s.abandon()

    threading.Thread(target=run, name="live-abandon", daemon=True).start()
