"""The local adapter of the Runner port: worker processes per device, least-loaded dispatch,
cross-request batching, and restart + retry when a worker dies.

    pool = LocalPool(settings).start()          # one process per GPU, or CPU_WORKERS processes
    future = pool.submit(Stage.VAD_SPLIT, pcm_ref)   # audio by reference: workers read the stored clip
    transcripts = list(pool.map(Stage.TRANSCRIBE, batches, options=options))

Who gets which call, and which TRANSCRIBE calls merge, is local_dev/scheduler.py's (pure); this module
keeps the queue and the workers, carries the scheduler's plan out, and splits merged results back. If a
merged call fails, each part is retried alone, so one bad request cannot fail another.

Crashes: a worker whose connection drops (killed, segfault, OOM) is restarted, and its calls in flight
go back to the front of the queue, preferably to another worker. A call fails with WorkerCrashed only
after WORKER_MAX_ATTEMPTS workers died under it (a call that kills every worker).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local_dev import scheduler, wire
from local_dev.gpus import WorkerSpec, plan_workers
from local_dev.launchers import (
    ExternalHandle,
    ExternalLauncher,
    Launcher,
    ProcessLauncher,
    WorkerHandle,
    external_spec,
)
from local_dev.pool_stats import WorkerCounters, with_gpu_usage, worker_row
from local_dev.settings import PoolSettings
from shared.runner import Runner
from shared.stages import Stage

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger("local_dev.pool")
_keys = itertools.count(1)


class WorkerCrashed(RuntimeError):
    """A call's worker died under it WORKER_MAX_ATTEMPTS times."""


class PoolClosed(RuntimeError):
    """The pool was closed before the call ran."""


@dataclass(eq=False)
class _Call:
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
class _Job:
    """One message to a worker: a call, or several merged TRANSCRIBE calls."""

    job_id: int
    stage: Stage
    calls: list[_Call]
    args: tuple
    kwargs: dict


@dataclass(eq=False)
class _Worker:
    spec: WorkerSpec
    handle: WorkerHandle | None = None
    conn: Any = None
    state: str = "starting"  # starting -> ready -> (dead -> starting ...) | failed | stopped
    info: dict = field(default_factory=dict)
    inflight: dict[int, _Job] = field(default_factory=dict)
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


class LocalPool(Runner):
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
        shared.stages:StageWorker) builds the object each worker runs stages on."""
        self.settings = settings
        self.pool_settings = pool or PoolSettings()
        self.launcher: Launcher = launcher or (ExternalLauncher() if external else ProcessLauncher())
        self.external = external
        if external:
            specs = []
        elif specs is None:
            specs = plan_workers(settings, pool=self.pool_settings, workers=workers)
        self.worker_factory = worker_factory
        self._workers: dict[int, _Worker] = {s.worker_id: _Worker(spec=s) for s in specs}
        self._cv = threading.Condition()
        self._pending: deque[_Call] = deque()
        self._closing = False
        self._next_job = 0
        self._picks = 0
        self.merged_calls = 0
        key = self.pool_settings.worker_authkey.get_secret_value() if self.pool_settings.worker_authkey else ""
        self._authkey = (key or secrets.token_hex(16)).encode()
        self._listener = wire.listen(listen_host, self.pool_settings.worker_port, self._authkey)
        self._deferred: list[tuple[_Call, BaseException]] = []  # failures to deliver outside the lock
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
            _fail(call, PoolClosed("the worker pool was closed"))
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

    def submit(self, stage: Stage, *args: Any, **kwargs: Any) -> Future:
        stage = Stage(stage)
        future: Future = Future()
        call = _Call(stage, args, kwargs, future, arrived=time.monotonic())
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

    def _launch(self, w: _Worker) -> None:
        with self._cv:
            if self._closing:
                return
            w.state = "starting"
            w.conn = None
            w.handle = None  # not the dead one: the monitor would take it for a failed start
            w.info = {}
        try:
            handle = self.launcher.start(w.spec, self.address, self._authkey)
        except Exception as exc:  # noqa: BLE001 - e.g. docker missing: count as a failed start
            log.exception("could not start worker %s", w.spec.worker_id)
            with self._cv:
                w.handle = None
                w.last_error = repr(exc)
                self._start_failed(w)
            self._flush()
            return
        with self._cv:
            w.handle = handle
            closing = self._closing
            self._cv.notify_all()
        if closing:  # close() ran meanwhile and did not see this one
            handle.kill()

    def _flush(self) -> None:
        """Fail the futures queued while the lock was held (their callbacks must not run under it)."""
        with self._cv:
            deferred, self._deferred = self._deferred, []
        for call, exc in deferred:
            _fail(call, exc)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except Exception:  # noqa: BLE001 - a failed handshake, or the listener closed
                if self._closing:
                    return
                continue
            if self._closing:
                conn.close()
                return
            threading.Thread(target=self._handshake, args=(conn,), daemon=True, name="pool-handshake").start()

    def _handshake(self, conn) -> None:
        try:
            hello = conn.recv()
            assert isinstance(hello, wire.Hello)
        except Exception:  # noqa: BLE001
            conn.close()
            return
        with self._cv:
            w = self._workers.get(hello.worker_id)
            if w is None and self.external:
                w = self._workers[hello.worker_id] = _Worker(spec=external_spec(hello.worker_id, hello.info))
                w.handle = ExternalHandle()
            if w is not None and self.external and w.state == "failed" and w.conn is None:
                w.state = "starting"  # restarted by compose: give it another chance
            if w is None or w.conn is not None or w.state in ("stopped", "failed"):
                conn.close()
                return
            w.conn = conn
            w.info = dict(hello.info)
            settings = w.spec.settings_for(self.launcher.worker_settings(self.settings))
        try:
            conn.send(wire.Init(settings, tuple(s.value for s in w.spec.stages), self.pool_settings.worker_preload,
                                self.worker_factory))
        except OSError:
            self._lost(w, conn, "connection lost during handshake")
            return
        self._reader(w, conn)

    def _reader(self, w: _Worker, conn) -> None:
        try:
            while True:
                msg = conn.recv()
                if isinstance(msg, wire.Ready):
                    with self._cv:
                        w.info.update(msg.info)
                        w.state = "ready"
                        w.failures_in_a_row = 0
                        w.counters.started_at = time.monotonic()
                        self._cv.notify_all()
                    log.info("worker %s ready on %s (%s)", w.spec.worker_id, w.spec.device.label, w.info)
                elif isinstance(msg, wire.Fatal):
                    with self._cv:
                        w.last_error = msg.error
                    log.error("worker %s could not load:\n%s", w.spec.worker_id, msg.error)
                elif isinstance(msg, (wire.Done, wire.Failed)):
                    self._finished(w, msg)
        except (EOFError, OSError) as exc:
            self._lost(w, conn, f"connection lost: {exc!r}" if str(exc) else "connection closed")
        except Exception as exc:  # noqa: BLE001 - a reply that cannot be unpickled here: start afresh
            log.exception("worker %s sent what the pool cannot read", w.spec.worker_id)
            self._lost(w, conn, f"unreadable reply: {exc!r}")

    def _lost(self, w: _Worker, conn, reason: str) -> None:
        """The worker's process or connection is gone: requeue its calls, restart it."""
        with self._cv:
            if w.conn is not conn or w.state in ("stopped",):
                return
            was_ready = w.state == "ready"
            handle = w.handle
            w.conn = None
            w.counters.idle()
            jobs, w.inflight = list(w.inflight.values()), {}
            retry: list[_Call] = []
            for call in (call for job in jobs for call in job.calls):
                if call.future.done():
                    continue
                if call.attempts >= self.pool_settings.worker_max_attempts:
                    self._deferred.append((call, WorkerCrashed(
                        f"{call.stage.value}: {call.attempts} workers died running this call (last: "
                        f"worker {w.spec.worker_id}, {reason})")))
                else:
                    call.avoid = w.spec.worker_id
                    retry.append(call)
            self._pending.extendleft(reversed(retry))
            if was_ready:
                w.counters.restarts += 1
                w.state = "dead"
            else:
                self._start_failed(w)
            self._cv.notify_all()
        self._flush()
        log.warning("worker %s lost (%s); %d call(s) requeued", w.spec.worker_id, reason, len(retry))
        conn.close()
        if handle is not None:
            handle.kill()
        if was_ready and not self._closing:
            self._launch(w)

    def _start_failed(self, w: _Worker) -> None:
        """A start that never reached ready. Retry with a growing delay; give up after
        WORKER_MAX_ATTEMPTS in a row and fail what only this kind of worker could run. Holds _cv."""
        w.failures_in_a_row += 1
        if w.failures_in_a_row >= self.pool_settings.worker_max_attempts:
            w.state = "failed"
            self._fail_unservable()
            return
        if self.external:
            w.state = "starting"  # whoever started it (compose: restart policy) starts it again
            return
        w.state = "dead"
        delay = min(0.5 * 2 ** (w.failures_in_a_row - 1), 10.0)

        def later() -> None:
            time.sleep(delay)
            with self._cv:
                if self._closing:
                    return
                w.counters.restarts += 1
            self._launch(w)

        threading.Thread(target=later, daemon=True, name="pool-restart").start()

    def _fail_unservable(self) -> None:
        alive = [w.slot() for w in self._workers.values() if w.state != "failed"]
        lost = set(scheduler.unservable([c.waiting() for c in self._pending], alive))
        if not lost:
            return
        errors = [w.last_error for w in self._workers.values() if w.last_error]
        for call in (c for c in self._pending if c.key in lost):
            msg = f"no worker can run {call.stage.value}: " + (errors[-1] if errors else "")
            self._deferred.append((call, RuntimeError(msg)))
        self._pending = deque(c for c in self._pending if c.key not in lost)

    def _monitor_loop(self) -> None:
        """Catch a process that dies before it connects (an import error, say): no socket to close."""
        while not self._closing:
            time.sleep(0.5)
            with self._cv:
                dead = [w for w in self._workers.values()
                        if w.state == "starting" and w.conn is None and w.handle is not None
                        and not w.handle.alive()]
                for w in dead:
                    w.last_error = w.last_error or f"worker process exited before connecting ({w.handle.description})"
                    w.handle = None
                    self._start_failed(w)
                if dead:
                    self._cv.notify_all()
            self._flush()

    # ----------------------------------------------------------------- dispatch

    def _policy(self) -> scheduler.Policy:
        p = self.pool_settings
        return scheduler.Policy(self.settings.batch_size, p.batch_wait_ms / 1000.0, p.worker_inflight, p.batch_merge)

    def _plan(self) -> tuple[list[tuple[_Worker, _Job]], float | None, bool]:
        """Ask the scheduler, then carry its plan out (holds _cv): the jobs to send, how long to wait
        at most, and whether to plan again at once (an assigned call was cancelled meanwhile)."""
        calls = {c.key: c for c in self._pending}
        plan = scheduler.plan([c.waiting() for c in calls.values()], [w.slot() for w in self._workers.values()],
                              self._policy(), time.monotonic())
        gone = set(plan.dropped)
        jobs: list[tuple[_Worker, _Job]] = []
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
            job = _Job(self._next_job, runnable[0].stage, runnable, args, kwargs)
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

    def _send(self, w: _Worker, job: _Job) -> None:
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
                _fail(call, exc)

    def _finished(self, w: _Worker, msg: wire.Done | wire.Failed) -> None:
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
                _fail(call, msg.error)
            return
        if len(job.calls) == 1:
            _resolve(job.calls[0], msg.result)
            return
        try:
            parts = scheduler.split_result(msg.result, [c.size for c in job.calls])
        except RuntimeError as exc:
            for call in job.calls:
                _fail(call, exc)
            return
        for call, part in zip(job.calls, parts, strict=True):
            _resolve(call, part)


def _resolve(call: _Call, result: Any) -> None:
    if not call.future.done():
        call.future.set_result(result)


def _fail(call: _Call, exc: BaseException) -> None:
    if call.future.done():
        return
    if not call.started and not call.future.set_running_or_notify_cancel():
        return  # cancelled meanwhile
    call.started = True
    call.future.set_exception(exc)


def serving_pool(settings: Settings, *, pool: PoolSettings | None = None, docker: bool = False,
                 workers: int | None = None, external: int | None = None, listen_host: str = "127.0.0.1",
                 build: bool = True) -> LocalPool:
    """The pool `python -m local_dev serve` runs on: worker processes, containers (--docker), or
    workers that connect on their own (--external-workers N, docker compose)."""
    pool = pool or PoolSettings()
    launcher: Launcher | None = None
    if docker:
        from local_dev.docker_runner import DockerLauncher

        launcher = DockerLauncher(settings, image=pool.docker_image, build=build)  # build=False: caller builds
    return LocalPool(settings, pool=pool, workers=workers, launcher=launcher, external=external,
                     listen_host=listen_host)
