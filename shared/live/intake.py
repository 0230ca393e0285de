"""How fast one live session takes audio, and how long it may stay open: the clock of its limits.

- **At most STREAM_MAX_SPEED x real time**, once the session is STREAM_MAX_LEAD_S of audio ahead of
  that (a recording sent as fast as the socket takes it starts at once, then is read at that speed),
  and **not while MAX_PENDING_FINALS finals wait** for the models. The writer waits for room
  (`wait_room`: an await, not a blocked thread; a decoder thread uses `wait_blocking`) and reads no
  more frames meanwhile, so the client's sends wait too (back-pressure): what a session holds and the
  model time it takes stay bounded however fast audio is sent.
- **At least STREAM_MIN_AUDIO_RATE x real time** once a connection has been open STREAM_RATE_GRACE_S
  (time spent waiting for room does not count): a trickle of bytes does not hold a live slot
  (`too_slow`; the protocols close with `audio_too_slow`).
- **At most STREAM_MAX_WALL_S** from the session's start, however it is fed (`expired`; `session_expired`).
- **At most STREAM_MAX_EVENTS_PER_S frames a second** per connection, audio or not (`EventRate`): the
  reader waits past it, so a flood of small or invalid events costs the event loop a bounded share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.core.domain import SAMPLE_RATE

MAX_PENDING_FINALS = 2  # utterances of one session waiting for their final before it takes more audio
POLL_S = 0.05  # how often a waiting writer looks again


@dataclass(frozen=True)
class Pace:
    max_speed: float = 4.0
    max_lead_s: float = 60.0
    min_rate: float = 0.25  # 0: no minimum
    grace_s: float = 60.0
    max_wall_s: float = 16200.0

    @classmethod
    def from_settings(cls, settings) -> "Pace":
        return cls(max_speed=settings.stream_max_speed, max_lead_s=settings.stream_max_lead_s,
                   min_rate=settings.stream_min_audio_rate, grace_s=settings.stream_rate_grace_s,
                   max_wall_s=settings.stream_max_wall_s)


class Intake:
    """One session's clock. `received()`: samples the session has taken; `pending()`: its finals waiting."""

    def __init__(self, pace: Pace, received: Callable[[], int], pending: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic):
        self.pace, self.received, self.pending, self.clock = pace, received, pending, clock
        self.born = clock()
        self.connect()

    def connect(self) -> None:
        """A connection (re)attached: the audio rate is measured from now."""
        self._since = self.clock()
        self._audio_at_connect = self.received()
        self.waited = 0.0  # seconds this connection spent waiting for room
        self.waiting_since: float | None = None

    @property
    def waiting(self) -> bool:
        return self.waiting_since is not None

    def wait_s(self) -> float:
        """0: the session may take audio now; else how long to wait before asking again."""
        if self.pending() >= MAX_PENDING_FINALS:
            return POLL_S
        speed = self.pace.max_speed
        ahead = self.received() / SAMPLE_RATE - self.pace.max_lead_s - speed * (self.clock() - self.born)
        return min(ahead / speed, POLL_S) if ahead > 0 else 0.0

    async def wait_room(self, wait_s: Callable[[], float] | None = None) -> None:
        """Wait, without blocking the event loop, until `wait_s` (default: this intake's) says 0."""
        wait_s = wait_s or self.wait_s
        delay = wait_s()
        if delay <= 0:
            return
        self.waiting_since = start = self.clock()
        try:
            while delay > 0:
                await asyncio.sleep(delay)
                delay = wait_s()
        finally:
            self.waiting_since = None
            self.waited += self.clock() - start

    def wait_blocking(self, stopped: Callable[[], bool], paused: Callable[[], bool] = lambda: False) -> None:
        """The same on a thread of its own (a decoder's), until room or `stopped()`; no room while `paused()`."""
        while not stopped() and (paused() or self.wait_s() > 0):
            time.sleep(POLL_S)

    def expired(self) -> bool:
        return self.clock() - self.born > self.pace.max_wall_s

    def too_slow(self) -> bool:
        """Past the grace period, this connection sent less audio than min_rate of its open time."""
        if self.pace.min_rate <= 0 or self.waiting:
            return False
        active = self.clock() - self._since - self.waited
        if active <= self.pace.grace_s:
            return False
        audio_s = (self.received() - self._audio_at_connect) / SAMPLE_RATE
        return audio_s < self.pace.min_rate * active


class EventRate:
    """A token bucket: at most `per_s` frames a second, in bursts of as many. `wait_s()` takes a token and
    says 0, or says how long to wait for one (and takes none)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic):
        self.per_s, self.clock = per_s, clock
        self.tokens, self.at = float(per_s), clock()

    def wait_s(self) -> float:
        now = self.clock()
        self.tokens = min(self.per_s, self.tokens + (now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_s
