"""The local adapter of the Runner port: worker processes per device, least-loaded dispatch,
cross-request batching, and restart + retry when a worker dies.

    pool = LocalPool(settings).start()          # one process per GPU, or CPU_WORKERS processes
    future = pool.submit(Stage.VAD_SPLIT, pcm_ref)   # audio by reference: workers read the stored clip
    transcripts = list(pool.map(Stage.TRANSCRIBE, batches, options=options))

- Dispatch: a call goes to the ready worker serving its stage with the fewest calls in flight (its
  queue depth); ties go to the worker picked least recently (round-robin). Each worker takes at most
  WORKER_INFLIGHT calls per stage: one running and the next already delivered, so the model never
  waits on the pool; the rest wait here, where they can still be batched.
- Batching (BATCH_MERGE; auto: on GPU workers): TRANSCRIBE calls (`batch: list[ChunkAudio]` first,
  options after) with identical options are merged, across requests, into one call of up to
  BATCH_SIZE chunks, and the result list is split back in order. A full batch goes at once (and may
  wait inside a busy worker, so it starts the moment the previous one ends); a short batch stays here
  while its worker is busy with another, growing with the calls of other requests, and waits up to
  BATCH_WAIT_MS on the one idle worker; with several idle, the waiting chunks are shared out at once.
  If a merged call fails, each part is retried alone, so one bad request cannot fail another.
- Crashes: a worker whose connection drops (killed, segfault, OOM) is restarted, and its calls in
  flight go back to the front of the queue, preferably to another worker. A call fails with
  WorkerCrashed only after WORKER_MAX_ATTEMPTS workers died under it (a call that kills every worker).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Listener
from typing import TYPE_CHECKING, Any, Protocol

from local_dev.gpus import Device, WorkerSpec, gpu_usage, plan_workers
from shared.runner import Runner
from shared.stages import ROLE_STAGES, Role, Stage

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger("local_dev.pool")

_ENV_LOCK = threading.Lock()


class WorkerCrashed(RuntimeError):
    """A call's worker died under it WORKER_MAX_ATTEMPTS times."""


class PoolClosed(RuntimeError):
    """The pool was closed before the call ran."""


class WorkerHandle(Protocol):
    description: str

    def alive(self) -> bool: ...

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for an orderly exit."""

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts the process of one worker spec; the process connects back to `address` itself."""

    name: str

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes) -> WorkerHandle: ...

    def worker_settings(self, settings: "Settings") -> "Settings": ...


class _ProcessHandle:
    def __init__(self, process: multiprocessing.process.BaseProcess):
        self.process = process
        self.description = f"pid {process.pid}"

    def alive(self) -> bool:
        return self.process.is_alive()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class ProcessLauncher:
    """Spawns `local_dev.worker.spawn_main` with the 'spawn' start method (never fork: a forked CUDA
    context is unusable, and the pin must be in the environment before the child imports anything)."""

    name = "process"

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes) -> WorkerHandle:
        from local_dev.worker import spawn_main

        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(
            target=spawn_main,
            args=(address, authkey, spec.worker_id, spec.env),
            name=f"whospoke-worker-{spec.worker_id}",
        )
        # The spawned interpreter inherits os.environ as it is at start(): pin the device there.
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in spec.env}
            os.environ.update(spec.env)
            try:
                process.start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return _ProcessHandle(process)

    def worker_settings(self, settings: "Settings") -> "Settings":
        return settings


class ExternalLauncher:
    """Workers started by someone else (docker compose, a second box) connect on their own."""

    name = "external"

    class _Handle:
        description = "external"

        def alive(self) -> bool:
            return True

        def join(self, timeout: float) -> None:
            pass

        def kill(self) -> None:
            pass

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes) -> WorkerHandle:
        return self._Handle()

    def worker_settings(self, settings: "Settings") -> "Settings":
        return settings


@dataclass(eq=False)
class _Call:
    """One submit(): a stage call with its future."""

    stage: Stage
    args: tuple
    kwargs: dict
    future: Future
    arrived: float
    merge_key: str | None = None  # TRANSCRIBE calls with equal keys may share one worker call
    size: int = 1  # chunks in a TRANSCRIBE batch
    attempts: int = 0
    started: bool = False
    avoid: int | None = None  # worker that died under this call: try another first


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
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    last_pick: int = 0
    calls_done: int = 0
    calls_failed: int = 0
    chunks_done: int = 0
    run_seconds: float = 0.0
    busy_seconds: float = 0.0
    busy_since: float | None = None
    started_at: float = 0.0

    def depth(self, stage: Stage | None = None) -> int:
        if stage is None:
            return len(self.inflight)
        return sum(1 for job in self.inflight.values() if job.stage is stage)


def _option_key(args: tuple, kwargs: dict) -> str:
    def one(value: Any) -> str:
        dump = getattr(value, "model_dump_json", None)
        return f"{type(value).__qualname__}:{dump()}" if dump else repr(value)

    return "|".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in sorted(kwargs.items())])


class LocalPool(Runner):
    def __init__(
        self,
        settings: "Settings",
        specs: list[WorkerSpec] | None = None,
        *,
        workers: int | None = None,
        launcher: Launcher | None = None,
        worker_factory: str | None = None,
        listen_host: str = "127.0.0.1",
        external: int | None = None,
    ):
        """`specs` default to plan_workers(settings) (NVML scan, CPU fallback); `workers` overrides the
        per-device count. `external=N` waits for N workers started elsewhere (docker compose) instead of
        launching any. `worker_factory` ("module:callable", default shared.stages:StageWorker) builds the
        object each worker runs stages on."""
        self.settings = settings
        self.launcher: Launcher = launcher or (ExternalLauncher() if external else ProcessLauncher())
        self.external = external
        if external:
            specs = []
        elif specs is None:
            specs = plan_workers(settings, workers=workers)
        self.worker_factory = worker_factory
        self._workers: dict[int, _Worker] = {s.worker_id: _Worker(spec=s) for s in specs}
        self._cv = threading.Condition()
        self._pending: deque[_Call] = deque()
        self._closing = False
        self._next_job = 0
        self._picks = 0
        self.merged_calls = 0
        key = settings.worker_authkey.get_secret_value() if settings.worker_authkey else ""
        self._authkey = (key or secrets.token_hex(16)).encode()
        self._listener = Listener((listen_host, settings.worker_port), backlog=16, authkey=self._authkey)
        self._deferred: list[tuple[_Call, BaseException]] = []  # failures to deliver outside the lock
        self.address: tuple[str, int] = self._listener.address
        self._threads: list[threading.Thread] = []
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, wait: bool = True, timeout: float = 600.0) -> "LocalPool":
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
                self._mark_idle_if(w, force=True)
            self._cv.notify_all()
        for call in pending:
            _fail(call, PoolClosed("the worker pool was closed"))
        for w in workers:
            if w.conn is not None:
                try:
                    with w.send_lock:
                        w.conn.send(("stop",))
                except OSError:
                    pass
        self._wake_accept()
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
            call.merge_key = _option_key(args[1:], kwargs)
            call.size = len(args[0])
        with self._cv:
            if self._closing:
                raise PoolClosed("the worker pool is closed")
            if not any(stage in w.spec.stages for w in self._workers.values()) and not self.external:
                raise ValueError(f"no worker serves stage {stage.value}")
            self._pending.append(call)
            self._cv.notify_all()
        return future

    # ----------------------------------------------------------------- metrics

    def stats(self) -> dict[str, Any]:
        """Per-worker device, state, queue depth, busy seconds, restarts (and live GPU numbers)."""
        now = time.monotonic()
        with self._cv:
            rows = []
            for w in sorted(self._workers.values(), key=lambda w: w.spec.worker_id):
                busy = w.busy_seconds + (now - w.busy_since if w.busy_since is not None else 0.0)
                rows.append({
                    "worker": w.spec.worker_id,
                    "device": w.spec.device.label,
                    "stages": [s.value for s in w.spec.stages],
                    "state": w.state,
                    "pid": w.info.get("pid"),
                    "process": w.handle.description if w.handle else None,
                    "queue_depth": w.depth(),
                    "busy_seconds": round(busy, 3),
                    "run_seconds": round(w.run_seconds, 3),
                    "calls_done": w.calls_done,
                    "calls_failed": w.calls_failed,
                    "chunks_done": w.chunks_done,
                    "restarts": w.restarts,
                    "uptime_seconds": round(now - w.started_at, 1) if w.state == "ready" else 0.0,
                    "last_error": w.last_error,
                })
            pending = len(self._pending)
        devices = list({w.spec.device for w in self._workers.values()})
        usage = gpu_usage(devices)
        for row, w in zip(rows, sorted(self._workers.values(), key=lambda w: w.spec.worker_id)):
            if w.spec.device.kind == "cuda" and w.spec.device.index in usage:
                row["gpu"] = usage[w.spec.device.index]
        return {
            "runner": "local_dev",
            "launcher": self.launcher.name,
            "pending": pending,
            "merged_calls": self.merged_calls,
            "workers": rows,
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
            kind, worker_id, info = conn.recv()
            assert kind == "hello"
        except Exception:  # noqa: BLE001
            conn.close()
            return
        with self._cv:
            w = self._workers.get(worker_id)
            if w is None and self.external:
                w = self._workers[worker_id] = _Worker(spec=_external_spec(worker_id, info))
                w.handle = ExternalLauncher._Handle()
            if w is not None and self.external and w.state == "failed" and w.conn is None:
                w.state = "starting"  # restarted by compose: give it another chance
            if w is None or w.conn is not None or w.state in ("stopped", "failed"):
                conn.close()
                return
            w.conn = conn
            w.info = dict(info)
            settings = w.spec.settings_for(self.launcher.worker_settings(self.settings))
        try:
            conn.send(("init", settings, [s.value for s in w.spec.stages], self.settings.worker_preload,
                       self.worker_factory))
        except OSError:
            self._lost(w, conn, "connection lost during handshake")
            return
        self._reader(w, conn)

    def _reader(self, w: _Worker, conn) -> None:
        try:
            while True:
                msg = conn.recv()
                kind = msg[0]
                if kind == "ready":
                    with self._cv:
                        w.info.update(msg[1])
                        w.state = "ready"
                        w.failures_in_a_row = 0
                        w.started_at = time.monotonic()
                        self._cv.notify_all()
                    log.info("worker %s ready on %s (%s)", w.spec.worker_id, w.spec.device.label, w.info)
                elif kind == "fatal":
                    with self._cv:
                        w.last_error = msg[1]
                    log.error("worker %s could not load:\n%s", w.spec.worker_id, msg[1])
                elif kind in ("ok", "err"):
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
            self._mark_idle_if(w, force=True)
            jobs, w.inflight = list(w.inflight.values()), {}
            retry: list[_Call] = []
            for job in jobs:
                for call in job.calls:
                    if call.future.done():
                        continue
                    if call.attempts >= self.settings.worker_max_attempts:
                        self._deferred.append((call, WorkerCrashed(
                            f"{call.stage.value}: {call.attempts} workers died running this call (last: "
                            f"worker {w.spec.worker_id}, {reason})")))
                    else:
                        call.avoid = w.spec.worker_id
                        retry.append(call)
            self._pending.extendleft(reversed(retry))
            if was_ready:
                w.restarts += 1
                w.state = "dead"
                restart_now = True
            else:
                self._start_failed(w)
                restart_now = False
            self._cv.notify_all()
        self._flush()
        log.warning("worker %s lost (%s); %d call(s) requeued", w.spec.worker_id, reason, len(retry))
        conn.close()
        if handle is not None:
            handle.kill()
        if restart_now and not self._closing:
            self._launch(w)

    def _start_failed(self, w: _Worker) -> None:
        """A start that never reached ready. Retry with a growing delay; give up after
        WORKER_MAX_ATTEMPTS in a row and fail what only this kind of worker could run. Holds _cv."""
        w.failures_in_a_row += 1
        if w.failures_in_a_row >= self.settings.worker_max_attempts:
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
                w.restarts += 1
            self._launch(w)

        threading.Thread(target=later, daemon=True, name="pool-restart").start()

    def _fail_unservable(self) -> None:
        alive = [w for w in self._workers.values() if w.state != "failed"]
        keep: deque[_Call] = deque()
        for call in self._pending:
            if any(call.stage in w.spec.stages for w in alive):
                keep.append(call)
            else:
                errors = [w.last_error for w in self._workers.values() if w.last_error]
                msg = f"no worker can run {call.stage.value}: " + (errors[-1] if errors else "")
                self._deferred.append((call, RuntimeError(msg)))
        self._pending = keep

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

    def _wake_accept(self) -> None:
        try:
            socket.create_connection(self.address, timeout=1).close()
        except OSError:
            pass

    # ----------------------------------------------------------------- dispatch

    def _pick(self, stage: Stage, avoid: int | None) -> _Worker | None:
        limit = self.settings.worker_inflight
        ready = [w for w in self._workers.values()
                 if w.state == "ready" and stage in w.spec.stages and w.depth(stage) < limit]
        if avoid is not None and len(ready) > 1:
            ready = [w for w in ready if w.spec.worker_id != avoid] or ready
        if not ready:
            return None
        # Fewest calls of this stage queued (they run one after another in the worker), then fewest
        # calls in all, then the one picked least recently (round-robin on ties).
        return min(ready, key=lambda w: (w.depth(stage), w.depth(), w.last_pick))

    def _plan(self) -> tuple[list[tuple[_Worker, _Job]], float | None]:
        """Assign what can run now (holds _cv). Returns the jobs and how long to wait at most."""
        now = time.monotonic()
        wait_s = self.settings.batch_wait_ms / 1000.0
        max_chunks = self.settings.batch_size
        jobs: list[tuple[_Worker, _Job]] = []
        wake: float | None = None
        taken: set[int] = set()
        shares: dict[str, int] = {}  # merge key -> chunks per idle worker, fixed for this pass
        for call in list(self._pending):
            if id(call) in taken:
                continue
            if call.future.cancelled():
                taken.add(id(call))
                continue
            worker = self._pick(call.stage, call.avoid)
            if worker is None:
                continue
            group = [call]
            if call.merge_key is not None and self._merging(worker):
                mates = [c for c in self._pending if c.merge_key == call.merge_key and id(c) not in taken
                         and c is not call and not c.future.cancelled()]
                if call.merge_key not in shares:
                    # Several idle workers: share the waiting chunks out now rather than pile them on one.
                    idle = self._idle(call.stage)
                    waiting = call.size + sum(c.size for c in mates)
                    shares[call.merge_key] = min(max_chunks, -(-waiting // idle)) if idle > 1 else 0
                share = shares[call.merge_key]
                cap = max(call.size, share) if share else max_chunks
                total = call.size
                for other in mates:
                    if total + other.size <= cap:
                        group.append(other)
                        total += other.size
                if total < max_chunks and worker.depth(call.stage):
                    continue  # the worker is busy with a batch: this one can still grow meanwhile
                deadline = call.arrived + wait_s
                if not share and total < max_chunks and now < deadline and call.attempts == 0:
                    wake = deadline if wake is None else min(wake, deadline)
                    continue  # hold a short batch a moment for calls from other requests
            runnable = []
            for c in group:
                taken.add(id(c))
                if c.started or c.future.set_running_or_notify_cancel():
                    c.started = True
                    c.attempts += 1
                    runnable.append(c)
            if not runnable:
                continue
            if len(runnable) == 1:
                args, kwargs = runnable[0].args, runnable[0].kwargs
            else:
                merged = [chunk for c in runnable for chunk in c.args[0]]
                args, kwargs = (merged, *call.args[1:]), call.kwargs
                self.merged_calls += 1
            self._next_job += 1
            job = _Job(self._next_job, call.stage, runnable, args, kwargs)
            if not worker.inflight and worker.busy_since is None:
                worker.busy_since = now
            worker.inflight[job.job_id] = job
            self._picks += 1
            worker.last_pick = self._picks
            jobs.append((worker, job))
        if taken:
            self._pending = deque(c for c in self._pending if id(c) not in taken)
        timeout = None if wake is None else max(0.0, wake - now)
        return jobs, timeout

    def _idle(self, stage: Stage) -> int:
        return sum(1 for w in self._workers.values()
                   if w.state == "ready" and stage in w.spec.stages and not w.depth(stage))

    def _merging(self, worker: _Worker) -> bool:
        """BATCH_MERGE: auto merges on GPU workers only. On a CPU a batch of 8 short chunks took as much
        compute as 8 single ones and every merged request waited for the longest (local_dev bench)."""
        mode = self.settings.batch_merge
        return mode == "on" or (mode == "auto" and worker.spec.device.kind == "cuda")

    def _dispatch_loop(self) -> None:
        while True:
            with self._cv:
                if self._closing:
                    return
                jobs, timeout = self._plan()
                if not jobs:
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
                conn.send(("run", job.job_id, job.stage.value, job.args, job.kwargs))
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
                self._mark_idle_if(w)
                self._cv.notify_all()
            for call in job.calls:
                _fail(call, exc)

    def _finished(self, w: _Worker, msg: tuple) -> None:
        kind, job_id = msg[0], msg[1]
        seconds = msg[-1]
        with self._cv:
            job = w.inflight.pop(job_id, None)
            self._mark_idle_if(w)
            w.run_seconds += seconds
            if job is not None:
                if kind == "ok":
                    w.calls_done += 1
                    w.chunks_done += sum(c.size for c in job.calls) if job.stage is Stage.TRANSCRIBE else 0
                else:
                    w.calls_failed += 1
                if kind == "err" and len(job.calls) > 1:
                    # One part may be the culprit: run each alone so the others still succeed.
                    for call in job.calls:
                        call.merge_key = None
                        call.attempts -= 1
                    self._pending.extendleft(reversed(job.calls))
                    job = None
            self._cv.notify_all()
        if job is None:
            return
        if kind == "err":
            exc, remote_tb = msg[2], msg[3]
            if remote_tb:
                exc.add_note(f"in worker {w.spec.worker_id} ({w.spec.device.label}):\n{remote_tb}")
            for call in job.calls:
                _fail(call, exc)
            return
        result = msg[2]
        if len(job.calls) == 1:
            _resolve(job.calls[0], result)
            return
        sizes = [c.size for c in job.calls]
        if not isinstance(result, list) or len(result) != sum(sizes):
            for call in job.calls:
                _fail(call, RuntimeError(f"merged transcribe returned {type(result).__name__} of "
                                         f"{len(result) if isinstance(result, list) else '?'}, expected {sum(sizes)}"))
            return
        start = 0
        for call, size in zip(job.calls, sizes):
            _resolve(call, result[start:start + size])
            start += size

    def _mark_idle_if(self, w: _Worker, force: bool = False) -> None:
        if (force or not w.inflight) and w.busy_since is not None:
            w.busy_seconds += time.monotonic() - w.busy_since
            w.busy_since = None


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


def _external_spec(worker_id: int, info: dict) -> WorkerSpec:
    role = info.get("role", Role.ALL.value)
    stages = ROLE_STAGES[Role(role)] if role in {r.value for r in Role} else ROLE_STAGES[Role.ALL]
    cuda = info.get("device") == "cuda"
    device = Device("cuda" if cuda else "cpu", int(info.get("gpu_index", worker_id)), info.get("gpu_name", "gpu"))
    return WorkerSpec(worker_id, device, stages)


def serving_pool(settings: "Settings", *, docker: bool = False, workers: int | None = None,
                 external: int | None = None, listen_host: str = "127.0.0.1", build: bool = True) -> LocalPool:
    """The pool `python -m local_dev serve` runs on: worker processes, containers (--docker), or
    workers that connect on their own (--external-workers N, docker compose)."""
    launcher: Launcher | None = None
    if docker:
        from local_dev.docker_runner import DockerLauncher

        launcher = DockerLauncher(settings, build=build)  # build=False: the caller builds (or not) first
    return LocalPool(settings, workers=workers, launcher=launcher, external=external, listen_host=listen_host)
