"""The JobStore port: durable job state. SQLite locally (sqlite_store.py), a modal.Dict on Modal
(functions/dict_job_store.py); both pass the contract tests in tests/test_jobs_store.py.

Every method is one atomic state transition. Transitions that only apply in a given state (finish a
running job, cancel a queued or running one) report whether they happened, so a worker that lost a race
with a cancel simply stops. Times are UNIX seconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from shared.domain import Transcript
from shared.jobs.model import DeliveryAttempt, Job, JobError


class JobStore(ABC):
    @abstractmethod
    def create(self, job: Job) -> Job:
        """Store a new queued job."""

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The job, or JobNotFound."""

    @abstractmethod
    def claim_next(self) -> Job | None:
        """Oldest queued job -> running, attempts + 1; None when nothing is queued."""

    @abstractmethod
    def update_progress(self, job_id: str, done: float, total: float) -> bool:
        """Record progress of a running job; False when it is no longer running (cancelled)."""

    @abstractmethod
    def finish(self, job_id: str, result: Transcript) -> bool:
        """running -> succeeded with its result; its webhook (if any) becomes pending."""

    @abstractmethod
    def fail(self, job_id: str, error: JobError) -> bool:
        """queued or running -> failed with a reason; its webhook (if any) becomes pending."""

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """queued or running -> cancelled; JobConflict when it already ended."""

    @abstractmethod
    def release(self, job_id: str) -> bool:
        """running -> queued without counting the attempt (the server is stopping cleanly)."""

    @abstractmethod
    def recover(self, max_attempts: int) -> list[Job]:
        """At start-up: jobs a crash left running are queued again, or failed once they have used
        max_attempts. Returns the jobs it changed."""

    @abstractmethod
    def delete_expired(self, finished_before: float) -> list[Job]:
        """Delete jobs that ended before the given time (and whose webhook is no longer pending)."""

    @abstractmethod
    def due_webhooks(self, now: float, limit: int) -> list[Job]:
        """Ended jobs whose webhook is pending and due."""

    @abstractmethod
    def add_delivery(self, job_id: str, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        """Record a webhook attempt; the webhook becomes delivered, pending until retry_at, or failed."""

    @abstractmethod
    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        """Every webhook attempt for the job, oldest first."""

    def count_by_status(self) -> dict[str, int] | None:
        """Jobs per status, for /metrics; None where a store cannot count cheaply."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
