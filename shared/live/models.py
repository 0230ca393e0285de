"""The models of live sessions, reached through the Runner port (the same workers as file jobs).

Partials of concurrent sessions are batched: while one batch decodes, each session's newest request
waits (an older one it superseded is dropped), and the waiting requests go together as the next batch,
oldest first. A session has at most one partial waiting or decoding, of at most its open utterance
(STREAM_MAX_UTTERANCE_S), asked for no more often than STREAM_PARTIAL_INTERVAL_MS of audio and of wall
time (shared/live/session.py): however fast a client sends, its partial work is a live client's.
Finals and voice embeddings are submitted one utterance at a time, beside file jobs' batches; a session
with MAX_PENDING_FINALS waiting takes no more audio (shared/live/intake.py). Those of sessions running
ahead of real time (a recording sent faster than it plays) go through one shared
background lane instead, one request at a time in arrival order: however many such sessions there are,
they take at most one model call at a time, and live sessions' calls do not wait behind theirs.

Finals first. When there is more live work than the cores can do, partials give way: while a live
session's final or voice embedding (what a final waits for) is submitted and not done, the next partial
batch waits, so the cores go to the finals; with none pending it goes at once, as it always did. Under
load, then, partial intervals stretch and final latency holds. Nothing new is queued: the waiting
partials are the same one-per-session requests as before (a newer one replaces an older one), so the
wait is bounded by the number of sessions. Background-lane calls and the open utterance's window
embeddings (`windows`, one request per session at a time) hold nothing back.

So that partials are not starved while finals keep coming, a partial batch waits behind finals at most
`partial_max_wait_s` (PARTIAL_MAX_WAIT_S, 2 s): then it goes, finals pending or not (one timer, armed
while a batch is held back, makes it go even if nothing else happens meanwhile). A time bound rather
than "after N finals": what a user sees is time between partials, finals vary in length (a 30 s
utterance's decode is many short ones'), and the time bound holds however slow each final is. On two
CPU cores a tiny.en final takes ~0.3-1 s, so 2 s lets a burst of finals through while an open
utterance still updates every couple of seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

import numpy as np

from shared.core.domain import SAMPLE_RATE, Chunk, TranscribeOptions

from shared.media.pcm import ArrayAudio, ChunkAudio
from shared.pipeline.runner import Runner
from shared.pipeline.stages import Stages

log = logging.getLogger(__name__)

PARTIAL_MAX_WAIT_S = 2.0  # the longest a partial batch waits behind live finals (module docstring)


class LiveModels:
    def __init__(self, runner: Runner, *, max_partial_batch: int = 8, partial_batches_in_flight: int = 1,
                 partial_max_wait_s: float = PARTIAL_MAX_WAIT_S):
        self.runner = runner
        self.max_partial_batch = max_partial_batch
        self.in_flight_limit = partial_batches_in_flight
        self.partial_max_wait_s = partial_max_wait_s
        self._lock = threading.Lock()
        self._waiting: dict[Any, tuple[np.ndarray, TranscribeOptions, Future]] = {}
        self._in_flight = 0
        self._finals_pending = 0  # live finals and voice embeddings submitted and not done
        self._held_since: float | None = None  # when the waiting partials began to wait for finals
        self._timer: threading.Timer | None = None  # armed while a partial batch is held back
        self.partial_batches_held = 0  # batches that waited for finals, and those the time bound let go
        self.partial_batches_forced = 0
        self.partial_batches = 0  # batches decoded, and the requests in them (for the bench's table)
        self.partial_requests = 0
        self._lane: deque[tuple[Callable[[], Future], Future]] = deque()  # background requests waiting
        self._lane_busy = False

    def partial(self, key: Any, audio: np.ndarray, options: TranscribeOptions) -> Future:
        """Words of an open utterance so far (seconds into `audio`). A newer request with the same `key`
        cancels this one if it is still waiting."""
        future: Future = Future()
        with self._lock:
            superseded = self._waiting.pop(key, None)
            self._waiting[key] = (audio, options, future)
        if superseded is not None:
            superseded[2].cancel()
        self._pump()
        return future

    def final(self, audio: np.ndarray, options: TranscribeOptions, background: bool = False) -> Future:
        """The utterance's ChunkTranscript from the accurate model, as file chunks are transcribed
        (`background`: in the background lane)."""
        duration = round(len(audio) / SAMPLE_RATE, 3)
        chunk = Chunk(index=0, start=0.0, end=duration, keep_start=0.0, keep_end=duration, speech=[(0.0, duration)])

        return self._one(Stages.live_final, [ChunkAudio(chunk, ArrayAudio(audio))], options,
                         background=background, first_class=True)

    def embed(self, audio: np.ndarray, background: bool = False) -> Future:
        return self._one(Stages.embed_voice, [audio], background=background, first_class=True)

    def windows(self, audio: np.ndarray, background: bool = False) -> Future:
        """The encoder's window vectors over `audio` (Stages.embed_windows)."""
        return self._one(Stages.embed_windows, [audio], background=background, first_class=False)

    def _one(self, stage: Callable, *args: Any, background: bool, first_class: bool) -> Future:
        """One stage call on a one-item batch (a Future of its one result): in the background lane, or now;
        `first_class`: a live final's call, which partial batches wait for (module docstring)."""
        def call() -> Future:
            return _first(self.runner.submit(stage, *args))

        if background:
            return self._background(call)
        return self._first_class(call) if first_class else call()

    def _first_class(self, call: Callable[[], Future]) -> Future:
        """Submit a live final's call now; partial batches wait while it is pending (module docstring)."""
        with self._lock:
            self._finals_pending += 1
        try:
            submitted = call()
        except BaseException:
            self._final_done()
            raise
        submitted.add_done_callback(lambda _f: self._final_done())
        return submitted

    def _final_done(self) -> None:
        with self._lock:
            self._finals_pending -= 1
        self._pump()

    def _background(self, call: Callable[[], Future]) -> Future:
        out: Future = Future()
        out.set_running_or_notify_cancel()
        with self._lock:
            self._lane.append((call, out))
        self._pump_lane()
        return out

    def _pump_lane(self) -> None:
        with self._lock:
            if self._lane_busy or not self._lane:
                return
            call, out = self._lane.popleft()
            self._lane_busy = True
        try:
            submitted = call()
        except Exception as exc:  # noqa: BLE001 - a runner that refuses: this request fails, not the lane
            out.set_exception(exc)
            self._lane_done()
            return
        submitted.add_done_callback(lambda f: (_relay(f, out), self._lane_done()))

    def _lane_done(self) -> None:
        with self._lock:
            self._lane_busy = False
        self._pump_lane()

    def _pump(self) -> None:
        with self._lock:
            if self._in_flight >= self.in_flight_limit or not self._waiting:
                return
            if self._finals_pending and not self._waited_long_enough():
                return
            if self._held_since is not None:
                self.partial_batches_held += 1
                self.partial_batches_forced += self._finals_pending > 0
                self._held_since = None
                if self._timer is not None:  # no longer needed: the batch goes now
                    self._timer.cancel()
                    self._timer = None
            first = next(iter(self._waiting.values()))[1]
            keys = [k for k, (_a, o, _f) in self._waiting.items() if o == first][: self.max_partial_batch]
            batch = [self._waiting.pop(k) for k in keys]
            self._in_flight += 1
            self.partial_batches += 1
            self.partial_requests += len(batch)
        futures = [f for _a, _o, f in batch if f.set_running_or_notify_cancel()]
        audios = [a for a, _o, f in batch if not f.cancelled()]
        if not futures:
            self._batch_done()
            return
        try:
            submitted = self.runner.submit(Stages.live_partial, audios, first)
        except Exception as exc:  # noqa: BLE001 - a runner that refuses: these partials fail, not the session
            self._resolve(futures, None, exc)
            return
        submitted.add_done_callback(lambda f: self._resolve(futures, f, None))

    def _waited_long_enough(self) -> bool:
        """Under the lock, with partials waiting and finals pending: whether the partials have waited
        `partial_max_wait_s`; if not, the timer is armed to look again when they will have."""
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        left = self._held_since + self.partial_max_wait_s - now
        if left <= 0:
            return True
        if self._timer is None:
            self._timer = threading.Timer(left, self._timer_fired)
            self._timer.daemon = True
            self._timer.start()
        return False

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer = None
        self._pump()

    def _resolve(self, futures: list[Future], done: Future | None, error: BaseException | None) -> None:
        try:
            if error is None and done is not None:
                error = done.exception()
            if error is not None:
                log.warning("live partials failed: %r", error)
                for f in futures:
                    f.set_exception(error)
            else:
                for f, words in zip(futures, done.result()):
                    f.set_result(words)
        finally:
            self._batch_done()

    def _batch_done(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._pump()


def _relay(done: Future, out: Future, pick=lambda result: result) -> None:
    """`done`'s outcome (its result through `pick`) onto `out`; a cancelled one (a runner shutting down)
    as a CancelledError."""
    if done.cancelled():
        out.set_exception(CancelledError())
    elif done.exception() is not None:
        out.set_exception(done.exception())
    else:
        out.set_result(pick(done.result()))


def _first(submitted: Future) -> Future:
    """A future of the first element of `submitted`'s list result."""
    out: Future = Future()
    out.set_running_or_notify_cancel()
    submitted.add_done_callback(lambda f: _relay(f, out, lambda result: result[0]))
    return out
