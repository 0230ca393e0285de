"""JobExecutor: worker threads in the server process that claim queued jobs and run them.

Each running job has a CancelToken (shared/pipeline/cancel.py, the one way a run is stopped): it is
cancelled when the store no longer has the job running here (a cancel, or a lapsed lease another server
took over; noticed by a progress report or a heartbeat) or when the server stops (the job goes back to
the queue), and the run ends at once if it is waiting on a stage, else at the next batch boundary. A
heartbeat thread renews the leases of the jobs this process runs (a stage may take longer than a lease
without reporting progress). A janitor thread recovers jobs whose lease
lapsed (their server died: this one before a restart, or another on the same storage), deletes jobs
whose results have expired, and sweeps expired and orphaned clips (shared/jobs/retention.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from shared.core.errors import ClipNotFound, ServiceError, error_code
from shared.jobs.model import Job, JobError
from shared.jobs.retention import sweep_clips
from shared.jobs.store import JobStore
from shared.pipeline.cancel import Cancelled, CancelToken
from shared.service.transcription import TranscriptionService

log = logging.getLogger(__name__)
INTERNAL_ERROR = error_code("internal_error")  # a job that failed on our side


CANCELLED, STOPPING = "the job is no longer running here", "the server is stopping"  # a token's reasons


class JobExecutor:
    def __init__(
        self,
        store: JobStore,
        service: TranscriptionService,
        *,
        workers: int = 1,
        max_attempts: int = 3,
        result_ttl_s: float = 86400.0,
        clip_ttl_s: float | None = None,
        on_finished: Callable[[Job], None] | None = None,
        poll_s: float = 1.0,
    ):
        """`clip_ttl_s`: sweep clips (CLIP_TTL_S, orphans) on the janitor's rounds; None: leave them."""
        self.store = store
        self.service = service
        self.max_attempts = max_attempts
        self.result_ttl_s = result_ttl_s
        self.clip_ttl_s = clip_ttl_s
        self.on_finished = on_finished
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._running: dict[str, CancelToken] = {}  # jobs this process runs now: their leases are renewed
        self._running_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True) for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._janitor, name="job-janitor", daemon=True))
        self._threads.append(threading.Thread(target=self._heartbeats, name="job-heartbeat", daemon=True))

    def start(self) -> "JobExecutor":
        # Jobs whose lease lapsed go back to the queue now; a job under a live lease is left to its
        # holder (another server on this storage, or this one's previous process until its lease lapses:
        # the janitor's rounds pick it up then).
        self.recover()
        for thread in self._threads:
            thread.start()
        return self

    def recover(self) -> list[Job]:
        recovered = self.store.recover(self.max_attempts)
        for job in recovered:
            log.warning("job %s: its server stopped while it ran (lease lapsed): now %s", job.job_id, job.status.value)
            if job.finished and self.on_finished:
                self.on_finished(job)
        if any(not job.finished for job in recovered):
            with self._wake:
                self._wake.notify_all()
        return recovered

    def notify(self) -> None:
        """A job was queued: wake an idle worker now rather than at its next poll."""
        with self._wake:
            self._wake.notify()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the threads; a running job goes back to the queue at its next progress report. True when
        every thread stopped within the timeout."""
        self._stop.set()
        with self._running_lock:
            for token in self._running.values():
                token.cancel(STOPPING)
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next()
            except Exception:  # noqa: BLE001 - a locked database should not kill the worker
                log.exception("could not claim a job")
                job = None
            if job is None:
                with self._wake:
                    self._wake.wait(self.poll_s)
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        token = CancelToken()
        with self._running_lock:
            self._running[job.job_id] = token
        if self._stop.is_set():
            token.cancel(STOPPING)
        try:
            self._run(job, token)
        finally:
            with self._running_lock:
                self._running.pop(job.job_id, None)

    def _heartbeats(self) -> None:
        """Renew the leases of the jobs running here, a few times per lease."""
        while not self._stop.wait(max(0.05, self.store.lease_s / 4)):
            with self._running_lock:
                running = list(self._running.items())
            for job_id, token in running:
                try:
                    if not self.store.heartbeat(job_id):  # cancelled, or taken over by another server
                        token.cancel(CANCELLED)
                except Exception:  # noqa: BLE001 - a missed beat is not fatal; the lease has slack
                    log.exception("job %s: heartbeat failed", job_id)

    def _run(self, job: Job, token: CancelToken) -> None:
        job_id = job.job_id

        def on_progress(done: float, total: float) -> None:
            if not self.store.update_progress(job_id, done, total):
                token.cancel(CANCELLED)
            token.check()

        log.info("job %s: attempt %d on clip %s", job_id, job.attempts, job.clip_id)
        try:
            transcript = self.service.transcribe_clip(
                job.clip_id, job.options, on_progress, cancel=token, owner=job.owner
            )  # the owner's voices name speakers
        except Cancelled:
            if token.reason == STOPPING:
                self.store.release(job_id)
                log.info("job %s: back in the queue (server stopping)", job_id)
            else:
                log.info("job %s: cancelled while running", job_id)
            return
        except ServiceError as exc:
            ended = self.store.fail(job_id, JobError(code=exc.code, message=exc.message))
        except Exception:  # noqa: BLE001 - the job fails with a reason; the worker goes on
            # the client gets a stable code and a reference; what went wrong inside goes to the log
            reference = uuid.uuid4().hex[:12]
            log.exception("job %s failed (reference %s)", job_id, reference)
            message = f"transcription failed on our side (reference {reference}); the job can be submitted again"
            ended = self.store.fail(job_id, JobError(code=INTERNAL_ERROR.code, message=message))
        else:
            ended = self.store.finish(job_id, transcript)
        if ended:
            finished = self.store.get(job_id)
            log.info("job %s: %s", job_id, finished.status.value)
            if self.on_finished:
                self.on_finished(finished)

    def _janitor(self) -> None:
        periods = [self.result_ttl_s, self.store.lease_s] + ([self.clip_ttl_s] if self.clip_ttl_s else [])
        interval = min(60.0, max(0.05, min(periods) / 4))
        while not self._stop.wait(interval):
            for task in (self.recover, self.delete_expired, self.sweep_clips):
                try:
                    task()
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("job janitor: %s failed", task.__name__)

    def delete_expired(self, now: float | None = None) -> list[Job]:
        expired = self.store.delete_expired((now or time.time()) - self.result_ttl_s)
        for job in expired:
            if job.owns_clip:
                try:
                    self.service.clips.delete(job.clip_id)
                except ClipNotFound:
                    pass
        if expired:
            log.info("deleted %d expired jobs", len(expired))
        return expired

    def sweep_clips(self, now: float | None = None) -> None:
        if self.clip_ttl_s:
            sweep_clips(self.service.clips, self.store, now=now or time.time(), clip_ttl_s=self.clip_ttl_s)
