"""The pool's records: a submitted call with its future, a message to a worker (one call or several
merged), and what the pool knows of each worker. The fields change under the pool's lock only."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from local_dev import scheduler
from local_dev.gpus import WorkerSpec
from local_dev.launchers import WorkerHandle
from local_dev.pool_stats import WorkerCounters
from shared.pipeline.stages import Stage

_keys = itertools.count(1)


class WorkerCrashed(RuntimeError):
    """A call's worker died under it WORKER_MAX_ATTEMPTS times."""


class PoolClosed(RuntimeError):
    """The pool was closed before the call ran."""


@dataclass(eq=False)
class Call:
    """One submit(): a stage call with its future."""

    stage: Stage
    args: tuple
    kwargs: dict
    future: Future
    arrived: float
    merge_key: str | None = None
    size: int = 1
    attempts: int = 0
    started: bool = False
    avoid: int | None = None
    key: int = field(default_factory=lambda: next(_keys))

    def waiting(self) -> scheduler.Waiting:
        return scheduler.Waiting(self.key, self.stage, self.arrived, self.merge_key, self.size, self.attempts,
                                 self.avoid, self.future.cancelled())


@dataclass(eq=False)
class Job:
    """One message to a worker: a call, or several merged TRANSCRIBE calls."""

    job_id: int
    stage: Stage
    calls: list[Call]
    args: tuple
    kwargs: dict


@dataclass(eq=False)
class Worker:
    spec: WorkerSpec
    handle: WorkerHandle | None = None
    conn: Any = None
    state: str = "starting"  # starting -> ready -> (dead -> starting ...) | failed | stopped
    info: dict = field(default_factory=dict)
    inflight: dict[int, Job] = field(default_factory=dict)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    failures_in_a_row: int = 0
    last_error: str | None = None
    last_pick: int = 0
    counters: WorkerCounters = field(default_factory=WorkerCounters)

    def slot(self) -> scheduler.Slot:
        depths: dict[Stage, int] = {}
        for job in self.inflight.values():
            depths[job.stage] = depths.get(job.stage, 0) + 1
        return scheduler.Slot(self.spec.worker_id, self.spec.stages, self.state == "ready",
                              self.spec.device.kind == "cuda", depths, self.last_pick)


def resolve(call: Call, result: Any) -> None:
    if not call.future.done():
        call.future.set_result(result)


def fail(call: Call, exc: BaseException) -> None:
    if call.future.done():
        return
    if not call.started and not call.future.set_running_or_notify_cancel():
        return  # cancelled meanwhile
    call.started = True
    call.future.set_exception(exc)
