"""The job state machine, once: pure transitions from a stored job and an event to the next stored job,
or a Refusal saying why the event does not apply. No I/O and no clock: the time comes in the event.

Both stores (sqlite_store.py, functions/dict_job_store.py) only load a `Stored`, apply one of these and
save the result atomically (a transaction, or compare-and-set on a version), so they cannot disagree.

    queued --claim--> running --finish--> succeeded
      ^                 |  |---fail----> failed
      |--release--------|  |---recover (lease lapsed, out of attempts)--> failed "interrupted"
      |--recover (lease lapsed)--|
    queued | running --cancel--> cancelled

Runs and leases: every claim starts a new run (`run` counts them) and gives it a lease, held by the
claiming store (`holder`: its instance id, one per server process or container) until `lease_until`.
Progress and heartbeats from the current run renew the lease; anything from an earlier run (one whose
job was recovered, and maybe claimed again since) or another holder is refused, so a worker that lost
its lease stops at its next report and can never end the job. Recovery takes a running job only once
its lease has lapsed, at start-up too: a second server on the same storage never runs a job whose
first server is alive and renewing its lease.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

from shared.core.domain import Transcript
from shared.core.errors import error_code
from shared.jobs.model import Job, JobError, JobStatus, Progress, WebhookState

INTERRUPTED = error_code("interrupted").code


@dataclass(frozen=True)
class Stored:
    """A job as a store keeps it: the Job the API shows, plus the bookkeeping of its runs."""

    job: Job
    run: int = 0  # runs ever claimed; the current one, while the job is running
    lease_until: float | None = None  # UNIX seconds; None when no run holds the job
    holder: str | None = None  # the instance id of the store whose run holds the lease

    def update(
        self, *, run: int | None = None, lease_until: Any = ..., holder: Any = ..., **job_changes: Any
    ) -> Stored:
        changes: dict[str, Any] = {"job": self.job.model_copy(update=job_changes)}
        if run is not None:
            changes["run"] = run
        if lease_until is not ...:
            changes["lease_until"] = lease_until
            if lease_until is None:
                changes["holder"] = None  # no lease, no holder
        if holder is not ...:
            changes["holder"] = holder
        return replace(self, **changes)


@dataclass(frozen=True)
class Refusal:
    """Why a transition did not apply; the job stays as it was."""

    reason: Literal["not_queued", "not_running", "lost_lease", "finished", "lease_alive", "no_webhook"]
    detail: str = ""


Outcome = Stored | Refusal


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def create(job: Job) -> Stored:
    return Stored(job.model_copy(update={"status": JobStatus.queued}))


def claim(s: Stored, *, now: float, lease_s: float, holder: str | None = None) -> Outcome:
    """queued -> running as a new run, attempts + 1, leased to `holder` until now + lease_s."""
    if s.job.status is not JobStatus.queued:
        return Refusal("not_queued", s.job.status.value)
    return s.update(
        run=s.run + 1, lease_until=now + lease_s, holder=holder, status=JobStatus.running,
        attempts=s.job.attempts + 1, started_at=_at(now),
    )  # fmt: skip


def _holds(s: Stored, run: int | None, holder: str | None = None) -> Refusal | None:
    """None when `run` may write to the job: it is running, and run is its current run (or None: the
    caller does not know its run and takes the running one), held by `holder` (when both are known)."""
    if s.job.status is not JobStatus.running:
        return Refusal("not_running", s.job.status.value)
    if run is not None and run != s.run:
        return Refusal("lost_lease", f"run {run} was taken over by run {s.run}")
    if holder is not None and s.holder is not None and holder != s.holder:
        return Refusal("lost_lease", f"the lease is held by {s.holder}")
    return None


def heartbeat(s: Stored, *, run: int | None, now: float, lease_s: float, holder: str | None = None) -> Outcome:
    """The run is alive: its lease moves on."""
    return _holds(s, run, holder) or s.update(lease_until=now + lease_s)


def progress(
    s: Stored, *, run: int | None, done: float, total: float, now: float, lease_s: float, holder: str | None = None
) -> Outcome:
    """Audio seconds done; a sign of life too. Refused once the run lost the job (cancelled, taken over)."""
    return _holds(s, run, holder) or s.update(lease_until=now + lease_s, progress=Progress(done=done, total=total))


def finish(s: Stored, *, run: int | None, result: Transcript, now: float) -> Outcome:
    """running -> succeeded with its result; its webhook (if any) becomes due."""
    if refused := _holds(s, run):
        return refused
    done = Progress(done=s.job.progress.total or s.job.progress.done, total=s.job.progress.total)
    ended = s.update(lease_until=None, status=JobStatus.succeeded, finished_at=_at(now), result=result, progress=done)
    return _webhook_due(ended, now)


def fail(s: Stored, *, run: int | None, error: JobError, now: float) -> Outcome:
    """running (this run) -> failed; a caller that holds no run may also fail a queued job."""
    if not (run is None and s.job.status is JobStatus.queued) and (refused := _holds(s, run)):
        return refused
    return _webhook_due(s.update(lease_until=None, status=JobStatus.failed, finished_at=_at(now), error=error), now)


def cancel(s: Stored, *, now: float) -> Outcome:
    """queued or running -> cancelled (the running run finds out at its next report)."""
    if s.job.finished:
        return Refusal("finished", s.job.status.value)
    return s.update(lease_until=None, status=JobStatus.cancelled, finished_at=_at(now))


def release(s: Stored, *, run: int | None) -> Outcome:
    """running -> queued without counting the attempt: the worker is stopping cleanly."""
    if refused := _holds(s, run):
        return refused
    return _requeued(s.update(attempts=max(s.job.attempts - 1, 0)))


def recover(s: Stored, *, now: float, max_attempts: int) -> Outcome:
    """A running job whose lease lapsed (its worker died or stalled) -> queued for another run, or failed
    as interrupted once it has used max_attempts runs. A live lease is never taken, whoever asks: at
    start-up a server cannot tell an earlier run of its own from a run of another server on the same
    storage, so it waits for the lease too (at most JOB_LEASE_S)."""
    if s.job.status is not JobStatus.running:
        return Refusal("not_running", s.job.status.value)
    if s.lease_until is not None and s.lease_until > now:
        return Refusal("lease_alive", f"leased for {s.lease_until - now:.1f} s more")
    attempts = s.job.attempts
    if attempts < max_attempts:
        return _requeued(s)
    message = (
        f"the server stopped while the job ran, {attempts} time(s); "
        f"not retried after {max_attempts} attempt(s) (JOB_MAX_ATTEMPTS)"
    )
    failed = s.update(
        lease_until=None, status=JobStatus.failed, finished_at=_at(now), error=JobError(code=INTERRUPTED, message=message)
    )
    return _webhook_due(failed, now)


def delivered(s: Stored, *, outcome: str, retry_at: float | None) -> Outcome:
    """A webhook attempt was made: the webhook is delivered, pending until retry_at, or failed."""
    hook = s.job.webhook
    if hook is None:
        return Refusal("no_webhook")
    if outcome == "delivered":
        state, next_at = WebhookState.delivered, None
    elif retry_at is not None:
        state, next_at = WebhookState.pending, _at(retry_at)
    else:
        state, next_at = WebhookState.failed, None
    return s.update(webhook=hook.model_copy(update={"state": state, "next_attempt_at": next_at}))


def _requeued(s: Stored) -> Stored:
    return s.update(
        lease_until=None, status=JobStatus.queued, started_at=None, progress=Progress(done=0.0, total=s.job.progress.total)
    )


def _webhook_due(s: Stored, now: float) -> Stored:
    """A job that succeeded or failed: its webhook (if any) becomes pending, due now. In the same change
    as the end itself, so a crash cannot end a job and lose its callback."""
    hook = s.job.webhook
    if hook is None or hook.state is not None:
        return s
    return s.update(webhook=hook.model_copy(update={"state": WebhookState.pending, "next_attempt_at": _at(now)}))
