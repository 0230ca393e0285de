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
"""

from __future__ import annotations

import logging
import threading
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


class LiveModels:
    def __init__(self, runner: Runner, *, max_partial_batch: int = 8, partial_batches_in_flight: int = 1):
        self.runner = runner
        self.max_partial_batch = max_partial_batch
        self.in_flight_limit = partial_batches_in_flight
        self._lock = threading.Lock()
        self._waiting: dict[Any, tuple[np.ndarray, TranscribeOptions, Future]] = {}
        self._in_flight = 0
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

        def call() -> Future:
            return _first(self.runner.submit(Stages.live_final, [ChunkAudio(chunk, ArrayAudio(audio))], options))

        return self._background(call) if background else call()

    def embed(self, audio: np.ndarray, background: bool = False) -> Future:
        def call() -> Future:
            return _first(self.runner.submit(Stages.embed_voice, [audio]))

        return self._background(call) if background else call()

    def windows(self, audio: np.ndarray, background: bool = False) -> Future:
        """The encoder's window vectors over `audio` (Stages.embed_windows)."""
        def call() -> Future:
            return _first(self.runner.submit(Stages.embed_windows, [audio]))

        return self._background(call) if background else call()

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
