"""The pool's side of its workers' lives: launch, the handshake on connect, reading replies, and
restart + requeue when one dies (local_dev/pool.py's LocalPool mixes this in; the state is the pool's,
guarded by its condition `_cv`).

A worker whose connection drops (killed, segfault, OOM) is restarted, and its calls in flight go back to
the front of the queue, preferably to another worker. A call fails with WorkerCrashed only after
WORKER_MAX_ATTEMPTS workers died under it (a call that kills every worker). A start that never reaches
ready is retried with a growing delay, and given up after WORKER_MAX_ATTEMPTS in a row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from local_dev import scheduler, wire
from local_dev.launchers import ExternalHandle, Launcher, external_spec
from local_dev.pool_calls import Call, Worker, WorkerCrashed, fail

if TYPE_CHECKING:
    from multiprocessing.connection import Listener

    from local_dev.settings import PoolSettings
    from shared.core.config import Settings

log = logging.getLogger("local_dev.pool")


class WorkerSupervisor:
    settings: Settings
    pool_settings: PoolSettings
    launcher: Launcher
    external: int | None
    worker_factory: str | None
    address: tuple[str, int]
    _cv: threading.Condition
    _workers: dict[int, Worker]
    _pending: deque[Call]
    _deferred: list[tuple[Call, BaseException]]
    _listener: Listener
    _authkey: bytes
    _closing: bool

    def _launch(self, w: Worker) -> None:
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
            fail(call, exc)

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
                w = self._workers[hello.worker_id] = Worker(spec=external_spec(hello.worker_id, hello.info))
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

    def _reader(self, w: Worker, conn) -> None:
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

    def _lost(self, w: Worker, conn, reason: str) -> None:
        """The worker's process or connection is gone: requeue its calls, restart it."""
        with self._cv:
            if w.conn is not conn or w.state in ("stopped",):
                return
            was_ready = w.state == "ready"
            handle = w.handle
            w.conn = None
            w.counters.idle()
            jobs, w.inflight = list(w.inflight.values()), {}
            retry: list[Call] = []
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

    def _start_failed(self, w: Worker) -> None:
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
