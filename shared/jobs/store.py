"""The JobStore port: durable job state. SQLite locally (sqlite_store.py), a modal.Dict on Modal
(functions/dict_job_store.py); both pass the contract tests in tests/test_jobs_store.py.

Every state change is one transition of shared/jobs/transitions.py, written here once: an adapter only
provides `_change` (load the job, apply the transition, save it atomically: a transaction or a
compare-and-set) and the scans and webhook records a store needs. Transitions that only apply in a
given state (finish a running job, cancel a queued or running one) report whether they happened, so a
worker that lost a race with a cancel, or lost its lease to another run, simply stops.

Leases: a claim leases the job to this store's run for `lease_s`, held by this store's `instance_id`
(one per server process or container); progress and `heartbeat` renew it; `recover` gives a job whose
lease lapsed to another run, and never takes a live lease (not at start-up either: another server on
the same storage may hold it). A store remembers the runs it claimed, so its writes to a job that has
moved on to another run are refused. Times are UNIX seconds.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from shared.core.domain import Transcript
from shared.core.errors import JobFinished, JobNotFound
from shared.jobs import transitions as T
from shared.jobs.model import DeliveryAttempt, Job, JobError, JobStatus
from shared.jobs.transitions import Refusal, Stored

Step = Callable[[Stored], "Stored | Refusal"]


class JobStore(ABC):
    def __init__(
        self, *, clock: Callable[[], float] = time.time, lease_s: float = 120.0, instance_id: str | None = None
    ):
        self.clock = clock
        self.lease_s = lease_s
        self.instance_id = instance_id or uuid.uuid4().hex[:16]  # the holder of the leases this store takes
        self._runs: dict[str, int] = {}  # job_id -> the run this store claimed
        self._runs_lock = threading.Lock()

    # --- what an adapter provides ---

    @abstractmethod
    def _insert(self, stored: Stored) -> None:
        """Store a new job."""

    @abstractmethod
    def _load(self, job_id: str) -> Stored:
        """The job as stored, its result included; JobNotFound when there is none."""

    @abstractmethod
    def _change(self, job_id: str, step: Step) -> tuple[Stored, Refusal | None]:
        """Apply `step` to the job as one atomic change. Returns the job as it now stands and the refusal,
        if the step refused (then nothing was written). JobNotFound when there is no such job."""

    @abstractmethod
    def _queued_ids(self) -> Iterable[str]:
        """Ids of queued jobs, oldest first (may include jobs that changed since: claims check again)."""

    @abstractmethod
    def _running_ids(self) -> Iterable[str]:
        """Ids of running jobs (a superset is fine: recovery checks each)."""

    def _ended(self, stored: Stored) -> None:  # noqa: B027 - optional hook
        """Called after a change that ended the job (succeeded, failed or cancelled)."""

    @abstractmethod
    def delete_expired(self, finished_before: float) -> list[Job]:
        """Delete jobs that ended before the given time (and whose webhook is no longer pending)."""

    @abstractmethod
    def due_webhooks(self, now: float, limit: int) -> list[Job]:
        """Ended jobs whose webhook is pending and due."""

    @abstractmethod
    def add_delivery(self, job_id: str, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        """Record a webhook attempt (keep every one) and apply transitions.delivered: the webhook becomes
        delivered, pending until retry_at, or failed."""

    @abstractmethod
    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        """Every webhook attempt for the job, oldest first."""

    def count_by_status(self) -> dict[str, int] | None:
        """Jobs per status, for /metrics; None where a store cannot count cheaply."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    # --- the port, on the transitions ---

    def create(self, job: Job) -> Job:
        """Store a new queued job."""
        stored = T.create(job)
        self._insert(stored)
        return stored.job

    def get(self, job_id: str) -> Job:
        """The job, or JobNotFound."""
        return self._load(job_id).job

    def claim(self, job_id: str) -> Job | None:
        """queued -> running for this job (attempts + 1), leased to this store; None when it is not
        queued (another worker has it, or it ended)."""
        now = self.clock()
        stored, refused = self._change(
            job_id, lambda s: T.claim(s, now=now, lease_s=self.lease_s, holder=self.instance_id)
        )
        if refused:
            return None
        with self._runs_lock:
            self._runs[job_id] = stored.run
        return stored.job

    def claim_next(self) -> Job | None:
        """Oldest queued job -> running; None when nothing is queued."""
        for job_id in self._queued_ids():
            try:
                job = self.claim(job_id)
            except JobNotFound:  # deleted since it was listed
                continue
            if job is not None:
                return job
        return None

    def _run(self, job_id: str) -> int | None:
        with self._runs_lock:
            return self._runs.get(job_id)

    def _apply(self, job_id: str, step: Step) -> tuple[Stored, Refusal | None]:
        stored, refused = self._change(job_id, step)
        if not refused and stored.job.status is not JobStatus.running:
            with self._runs_lock:
                self._runs.pop(job_id, None)
        if not refused and stored.job.finished:
            self._ended(stored)
        return stored, refused

    def heartbeat(self, job_id: str) -> bool:
        """Keep this store's run of the job alive; False when it is no longer the running one."""
        run = self._run(job_id)
        if run is None:
            return False
        now = self.clock()
        try:
            _, refused = self._change(
                job_id, lambda s: T.heartbeat(s, run=run, now=now, lease_s=self.lease_s, holder=self.instance_id)
            )
        except JobNotFound:
            return False
        return refused is None

    def update_progress(self, job_id: str, done: float, total: float) -> bool:
        """Record progress of a running job (renews its lease); False when this store's run no longer
        has the job (cancelled, or taken over after its lease lapsed)."""
        run, now = self._run(job_id), self.clock()
        step = lambda s: T.progress(  # noqa: E731
            s, run=run, done=done, total=total, now=now, lease_s=self.lease_s, holder=self.instance_id
        )
        return self._apply(job_id, step)[1] is None

    def finish(self, job_id: str, result: Transcript) -> bool:
        """running -> succeeded with its result; its webhook (if any) becomes pending."""
        run, now = self._run(job_id), self.clock()
        return self._apply(job_id, lambda s: T.finish(s, run=run, result=result, now=now))[1] is None

    def fail(self, job_id: str, error: JobError) -> bool:
        """running (or queued) -> failed with a reason; its webhook (if any) becomes pending."""
        run, now = self._run(job_id), self.clock()
        return self._apply(job_id, lambda s: T.fail(s, run=run, error=error, now=now))[1] is None

    def cancel(self, job_id: str) -> Job:
        """queued or running -> cancelled; JobFinished (a JobConflict) when it already ended."""
        now = self.clock()
        stored, refused = self._apply(job_id, lambda s: T.cancel(s, now=now))
        if refused:
            raise JobFinished(f"job {job_id} already {stored.job.status.value}")
        return stored.job

    def release(self, job_id: str) -> bool:
        """running -> queued without counting the attempt (the server is stopping cleanly)."""
        run = self._run(job_id)
        return self._apply(job_id, lambda s: T.release(s, run=run))[1] is None

    def recover_job(self, job_id: str, max_attempts: int) -> Job | None:
        """transitions.recover for one job: the job as it changed, or None when it did not apply."""
        now = self.clock()
        try:
            stored, refused = self._apply(job_id, lambda s: T.recover(s, now=now, max_attempts=max_attempts))
        except JobNotFound:
            return None
        return None if refused else stored.job

    def recover(self, max_attempts: int) -> list[Job]:
        """Running jobs whose lease lapsed are queued again, or failed once they have used max_attempts.
        Jobs under a live lease stay with their holder. Returns the jobs it changed."""
        changed = (self.recover_job(job_id, max_attempts) for job_id in list(self._running_ids()))
        return [job for job in changed if job is not None]

    def open_clip_ids(self) -> set[str]:
        """The clips of queued and running jobs: kept whatever their age (shared/jobs/retention.py)."""
        ids = set()
        for job_id in [*self._queued_ids(), *self._running_ids()]:
            try:
                job = self.get(job_id)
            except JobNotFound:
                continue
            if not job.finished:
                ids.add(job.clip_id)
        return ids
