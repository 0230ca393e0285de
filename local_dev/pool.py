"""The local adapter of the Runner port: worker processes per device, least-loaded dispatch,
cross-request batching, and restart + retry when a worker dies.

    pool = LocalPool(settings).start()          # one process per GPU, or CPU_WORKERS processes
    future = pool.submit(Stages.vad_split, pcm_ref)   # audio by reference: workers read the stored clip
    transcripts = list(pool.map(Stages.transcribe, batches, options=options))

Who gets which call, and which TRANSCRIBE calls merge, is local_dev/scheduler.py's (pure); this module
keeps the queue and the workers, carries the scheduler's plan out, and splits merged results back. If a
merged call fails, each part is retried alone, so one bad request cannot fail another.

Crashes, restarts and retries: local_dev/supervisor.py.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from local_dev import scheduler, wire
from local_dev.gpus import WorkerSpec, plan_workers
from local_dev.launchers import ExternalLauncher, Launcher, ProcessLauncher
from local_dev.pool_calls import Call, Job, PoolClosed, Worker, WorkerCrashed, fail, resolve
from local_dev.pool_stats import with_gpu_usage, worker_row
from local_dev.settings import PoolSettings
from local_dev.supervisor import WorkerSupervisor
from shared.pipeline.runner import Runner
from shared.pipeline.stages import Stage

if TYPE_CHECKING:
    from shared.core.config import Settings

__all__ = ["LocalPool", "PoolClosed", "WorkerCrashed", "serving_pool"]


class LocalPool(WorkerSupervisor, Runner):
    def __init__(
        self,
        settings: Settings,
        specs: list[WorkerSpec] | None = None,
        *,
        pool: PoolSettings | None = None,
        workers: int | None = None,
        launcher: Launcher | None = None,
        worker_factory: str | None = None,
        listen_host: str = "127.0.0.1",
        external: int | None = None,
    ):
        """`settings` go to the workers (with their device); `pool` (default: PoolSettings() from the
        environment) are the pool's own. `specs` default to plan_workers (NVML scan, CPU fallback);
        `workers` overrides the per-device count. `external=N` waits for N workers started elsewhere
        (docker compose) instead of launching any. `worker_factory` ("module:callable", default
        shared.pipeline.models:StageWorker) builds the object each worker runs stages on."""
        self.settings = settings
        self.pool_settings = pool or PoolSettings()
        self.launcher: Launcher = launcher or (ExternalLauncher() if external else ProcessLauncher())
        self.external = external
        if external:
            specs = []
        elif specs is None:
            specs = plan_workers(settings, pool=self.pool_settings, workers=workers)
        self.worker_factory = worker_factory
        self._workers: dict[int, Worker] = {s.worker_id: Worker(spec=s) for s in specs}
        self._cv = threading.Condition()
        self._pending: deque[Call] = deque()
        self._closing = False
        self._next_job = 0
        self._picks = 0
        self.merged_calls = 0
        key = self.pool_settings.worker_authkey.get_secret_value() if self.pool_settings.worker_authkey else ""
        self._authkey = (key or secrets.token_hex(16)).encode()
        self._listener = wire.listen(listen_host, self.pool_settings.worker_port, self._authkey)
        self._deferred: list[tuple[Call, BaseException]] = []  # failures to deliver outside the lock
        self.address: tuple[str, int] = self._listener.address
        self._threads: list[threading.Thread] = []
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, wait: bool = True, timeout: float = 600.0) -> LocalPool:
        if not self._started:
            self._started = True
            for target, name in ((self._accept_loop, "accept"), (self._dispatch_loop, "dispatch"),
                                 (self._monitor_loop, "monitor")):
                thread = threading.Thread(target=target, name=f"pool-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
            for w in list(self._workers.values()):
                self._launch(w)
        if wait:
            self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until every worker is ready (or `external` have connected); raise if one cannot load."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                failed = [w for w in self._workers.values() if w.state == "failed"]
                if failed:
                    raise RuntimeError(f"worker {failed[0].spec.worker_id} failed to start:\n{failed[0].last_error}")
                ready = [w for w in self._workers.values() if w.state == "ready"]
                if ready and len(ready) == len(self._workers) and len(ready) >= (self.external or 0):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"workers not ready after {timeout:.0f}s: {self.stats()['workers']}")
                self._cv.wait(min(left, 0.5))

    def close(self) -> None:
        with self._cv:
            if self._closing:
                return
            self._closing = True
            pending, self._pending = list(self._pending), deque()
            workers = list(self._workers.values())
            for w in workers:
                w.state = "stopped"
                pending += [call for job in w.inflight.values() for call in job.calls]
                w.inflight = {}
                w.counters.idle()
            self._cv.notify_all()
        for call in pending:
            fail(call, PoolClosed("the worker pool was closed"))
        for w in workers:
            if w.conn is not None:
                try:
                    with w.send_lock:
                        w.conn.send(wire.Stop())
                except OSError:
                    pass
        wire.wake(self.address)
        deadline = time.monotonic() + 3
        for w in workers:
            handle = w.handle
            if handle is not None:
                handle.join(max(0.0, deadline - time.monotonic()))
                handle.kill()
            if w.conn is not None:
                w.conn.close()
        self._listener.close()

    # ----------------------------------------------------------------- Runner port

    def _submit(self, stage: Stage, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        call = Call(stage, args, kwargs, future, arrived=time.monotonic())
        if stage is Stage.TRANSCRIBE and args and isinstance(args[0], list):
            call.merge_key = scheduler.merge_key(args[1:], kwargs)
            call.size = len(args[0])
        with self._cv:
            if self._closing:
                raise PoolClosed("the worker pool is closed")
            if not any(stage in w.spec.stages for w in self._workers.values()) and not self.external:
                raise ValueError(f"no worker serves stage {stage.value}")
            self._pending.append(call)
            self._cv.notify_all()
        return future

    def stats(self) -> dict[str, Any]:
        """Per-worker device, state, queue depth, busy seconds, restarts (and live GPU numbers)."""
        now = time.monotonic()
        with self._cv:
            workers = sorted(self._workers.values(), key=lambda w: w.spec.worker_id)
            rows = [worker_row(w.spec, w.counters, state=w.state, info=w.info, queue_depth=len(w.inflight),
                               process=w.handle.description if w.handle else None, last_error=w.last_error,
                               now=now)
                    for w in workers]
            pending = len(self._pending)
        return {
            "runner": "local_dev",
            "launcher": self.launcher.name,
            "pending": pending,
            "merged_calls": self.merged_calls,
            "workers": with_gpu_usage(rows, [w.spec for w in workers]),
        }

    # ----------------------------------------------------------------- workers

    # ----------------------------------------------------------------- dispatch

    def _policy(self) -> scheduler.Policy:
        p = self.pool_settings
        return scheduler.Policy(self.settings.batch_size, p.batch_wait_ms / 1000.0, p.worker_inflight, p.batch_merge)

    def _plan(self) -> tuple[list[tuple[Worker, Job]], float | None, bool]:
        """Ask the scheduler, then carry its plan out (holds _cv): the jobs to send, how long to wait
        at most, and whether to plan again at once (an assigned call was cancelled meanwhile)."""
        calls = {c.key: c for c in self._pending}
        plan = scheduler.plan([c.waiting() for c in calls.values()], [w.slot() for w in self._workers.values()],
                              self._policy(), time.monotonic())
        gone = set(plan.dropped)
        jobs: list[tuple[Worker, Job]] = []
        again = False
        for assignment in plan.assignments:
            gone.update(assignment.calls)
            runnable = []
            for c in (calls[k] for k in assignment.calls):
                if c.started or c.future.set_running_or_notify_cancel():
                    c.started = True
                    c.attempts += 1
                    runnable.append(c)
            if not runnable:
                again = True  # the plan counted this worker as busier than it is
                continue
            if len(runnable) == 1:
                args, kwargs = runnable[0].args, runnable[0].kwargs
            else:
                args, kwargs = scheduler.merged_args([c.args for c in runnable]), runnable[0].kwargs
                self.merged_calls += 1
            worker = self._workers[assignment.worker_id]
            self._next_job += 1
            job = Job(self._next_job, runnable[0].stage, runnable, args, kwargs)
            worker.counters.busy()
            worker.inflight[job.job_id] = job
            self._picks += 1
            worker.last_pick = self._picks
            jobs.append((worker, job))
        if gone:
            self._pending = deque(c for c in self._pending if c.key not in gone)
        return jobs, plan.wake_in, again

    def _dispatch_loop(self) -> None:
        while True:
            with self._cv:
                if self._closing:
                    return
                jobs, timeout, again = self._plan()
                if not jobs:
                    if not again:
                        self._cv.wait(timeout)
                    continue
            for worker, job in jobs:
                self._send(worker, job)

    def _send(self, w: Worker, job: Job) -> None:
        conn = w.conn
        try:
            if conn is None:
                raise OSError("worker not connected")
            with w.send_lock:
                conn.send(wire.Run(job.job_id, job.stage.value, job.args, job.kwargs))
        except (OSError, ValueError) as exc:
            if conn is not None:
                self._lost(w, conn, f"send failed: {exc!r}")
            else:
                with self._cv:  # lost between planning and sending: requeue it
                    if w.inflight.pop(job.job_id, None) is not None:
                        for call in job.calls:
                            call.attempts -= 1
                        self._pending.extendleft(reversed(job.calls))
                        self._cv.notify_all()
        except Exception as exc:  # noqa: BLE001 - e.g. arguments that cannot be pickled
            with self._cv:
                w.inflight.pop(job.job_id, None)
                if not w.inflight:
                    w.counters.idle()
                self._cv.notify_all()
            for call in job.calls:
                fail(call, exc)

    def _finished(self, w: Worker, msg: wire.Done | wire.Failed) -> None:
        with self._cv:
            job = w.inflight.pop(msg.job, None)
            if not w.inflight:
                w.counters.idle()
            w.counters.run_seconds += msg.seconds
            if job is not None:
                ok = isinstance(msg, wire.Done)
                if ok:
                    w.counters.calls_done += 1
                    w.counters.chunks_done += sum(c.size for c in job.calls) if job.stage is Stage.TRANSCRIBE else 0
                else:
                    w.counters.calls_failed += 1
                if not ok and len(job.calls) > 1:
                    # One part may be the culprit: run each alone so the others still succeed.
                    for call in job.calls:
                        call.merge_key = None
                        call.attempts -= 1
                    self._pending.extendleft(reversed(job.calls))
                    job = None
            self._cv.notify_all()
        if job is None:
            return
        if isinstance(msg, wire.Failed):
            if msg.traceback:
                msg.error.add_note(f"in worker {w.spec.worker_id} ({w.spec.device.label}):\n{msg.traceback}")
            for call in job.calls:
                fail(call, msg.error)
            return
        if len(job.calls) == 1:
            resolve(job.calls[0], msg.result)
            return
        try:
            parts = scheduler.split_result(msg.result, [c.size for c in job.calls])
        except RuntimeError as exc:
            for call in job.calls:
                fail(call, exc)
            return
        for call, part in zip(job.calls, parts, strict=True):
            resolve(call, part)


def serving_pool(settings: Settings, *, pool: PoolSettings | None = None, docker: bool = False,
                 workers: int | None = None, external: int | None = None, listen_host: str = "127.0.0.1",
                 build: bool = True) -> LocalPool:
    """The pool `python -m local_dev serve` runs on: worker processes, containers (--docker), or
    workers that connect on their own (--external-workers N, docker compose)."""
    pool = pool or PoolSettings()
    launcher: Launcher | None = None
    if docker:
        from local_dev.docker_launcher import DockerLauncher

        launcher = DockerLauncher(settings, image=pool.docker_image, build=build)  # build=False: caller builds
    return LocalPool(settings, pool=pool, workers=workers, launcher=launcher, external=external,
                     listen_host=listen_host)
