"""The Runner port: how the pipeline gets a stage run, wherever the models live.

The pipeline calls stages through it by their `Stages` method: `runner.submit(Stages.diarize, audio,
hints)` is a Future of `list[Turn]`, typed as the method is; `runner.map(Stages.transcribe, batches,
options=options)` fans a stage out, and stops waiting (cancelling what it queued) when the `cancel`
token it is given is cancelled (shared/pipeline/cancel.py). Adapters implement `_submit` (and, where
they can fan out, `_map`) on a Stage name: `InProcessRunner` (tests, CLI, single machine), local_dev's
worker pool, and the Modal runner in functions/.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from shared.pipeline.cancel import CancelToken
from shared.pipeline.models import StageWorker
from shared.pipeline.stages import Stage, Stages, stage_of

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Runner(ABC):
    def submit(self, stage: Callable[Concatenate[Stages, P], R], *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start one stage call; the Future holds its result or its exception."""
        return self._submit(stage_of(stage), *args, **kwargs)

    def call(self, stage: Callable[Concatenate[Stages, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one stage call and wait for its result."""
        return self._submit(stage_of(stage), *args, **kwargs).result()

    def map(
        self,
        stage: Callable[Concatenate[Stages, T, ...], R],
        items: Iterable[T],
        *,
        cancel: CancelToken | None = None,
        **kwargs: Any,
    ) -> Iterator[R]:
        """Run `stage(item, **kwargs)` for every item, yielding results in input order as they finish.
        With `cancel`: a wait for the next result ends in Cancelled once the token is cancelled; close the
        iterator to cancel the calls it has not started."""
        return self._map(stage_of(stage), items, cancel=cancel, **kwargs)

    @abstractmethod
    def _submit(self, stage: Stage, *args: Any, **kwargs: Any) -> Future:
        """Start one call of `stage` (the adapter's part)."""

    def _map(
        self, stage: Stage, items: Iterable[Any], *, cancel: CancelToken | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Adapters that can fan out (a worker pool, Modal's .map) override this; the default submits all
        items at once and lets `_submit` decide how many run together."""
        futures = [self._submit(stage, item, **kwargs) for item in items]
        try:
            for future in futures:
                yield cancel.wait(future) if cancel else future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers; the default holds none."""

    def stats(self) -> dict[str, Any]:
        """Per-worker device, stages, queue depth and busy seconds, for /api/workers and /metrics."""
        return {"runner": type(self).__name__, "workers": []}

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessRunner(Runner):
    """Runs stages on threads of this process, next to one StageWorker.

    One small thread pool per stage: diarization runs beside transcription instead of queueing behind
    its batches, and as many transcription batches run at once as the model has workers
    (TRANSCRIBE_WORKERS).
    """

    def __init__(self, worker: StageWorker, *, transcribe_threads: int | None = None, diarize_threads: int = 1):
        self.worker = worker
        self._lock = threading.Lock()
        self._queued = 0
        self._busy_seconds = 0.0
        self._calls_done = 0
        self._calls_failed = 0
        transcribe_threads = transcribe_threads or worker.settings.resolved_transcribe_workers
        sizes = {Stage.TRANSCRIBE: transcribe_threads, Stage.DIARIZE: diarize_threads}
        self._pools = {
            stage: ThreadPoolExecutor(max_workers=sizes.get(stage, 2), thread_name_prefix=f"stage-{stage.value}")
            for stage in Stage
        }

    def _submit(self, stage: Stage, *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            self._queued += 1
        future = self._pools[stage].submit(self._run, stage, *args, **kwargs)
        future.add_done_callback(self._dropped)
        return future

    def _dropped(self, future: Future) -> None:
        """A call cancelled before it started (its run gave up) is no longer queued."""
        if future.cancelled():
            with self._lock:
                self._queued -= 1

    def _run(self, stage: Stage, *args: Any, **kwargs: Any) -> Any:
        start, ok = time.monotonic(), False
        try:
            result = self.worker.run(stage, *args, **kwargs)
            ok = True
            return result
        finally:
            with self._lock:
                self._queued -= 1
                self._busy_seconds += time.monotonic() - start
                self._calls_done += ok
                self._calls_failed += not ok

    def stats(self) -> dict[str, Any]:
        with self._lock:
            row = {
                "worker": 0,
                "device": self.worker.settings.resolved_device,
                "stages": [s.value for s in Stage],
                "state": "ready",
                "pid": os.getpid(),
                "queue_depth": self._queued,
                "busy_seconds": round(self._busy_seconds, 3),
                "calls_done": self._calls_done,
                "calls_failed": self._calls_failed,
                "restarts": 0,
            }
        return {"runner": "in-process", "workers": [row]}

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
