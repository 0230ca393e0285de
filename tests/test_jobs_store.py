"""The SQLite job store: atomic state transitions, leases and recovery, expiry, deliveries.

These are the contract tests of the JobStore port: tests/test_modal_jobs_store.py runs every one of them
over the modal.Dict store too. Both run with real leases (LEASE_S on a clock the tests move, and one test
on the wall clock), so a lease that has not lapsed is never taken."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest

from shared.core.domain import Segment, TranscribeOptions, Transcript
from shared.jobs.model import DeliveryAttempt, Job, JobConflict, JobError, JobNotFound, JobStatus, Progress, Webhook
from shared.jobs.model import job_json, new_job_id, new_webhook_id
from shared.jobs.sqlite_store import SqliteJobStore


LEASE_S = 30.0


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3", clock=clock, lease_s=LEASE_S)
    yield s
    s.close()


@pytest.fixture
def reopen(store, clock):
    """Another store over the same storage (another process, or the same one after a restart). Other
    adapters' tests (tests/test_modal_jobs_store.py) import this module's tests and override both."""
    opened = []

    def again():
        opened.append(SqliteJobStore(store.path, clock=clock, lease_s=LEASE_S))
        return opened[-1]

    yield again
    for s in opened:
        s.close()


def new_job(created: float = 1_000_000.0, webhook: bool = False, owns_clip: bool = False, owner: str = "") -> Job:
    return Job(
        job_id=new_job_id(),
        status=JobStatus.queued,
        clip_id="a" * 32,
        owns_clip=owns_clip,
        owner=owner,
        options=TranscribeOptions(diarize=False, language="en"),
        created_at=datetime.fromtimestamp(created, timezone.utc),
        progress=Progress(total=28.0),
        webhook=Webhook(url="https://example.com/hook", id=new_webhook_id()) if webhook else None,
    )


TRANSCRIPT = Transcript(segments=[Segment(start=0.0, end=1.0, text="hello")], language="en", duration=28.0)


def test_sqlite_wal_journal(store):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_file_from_before_leases_opens_and_its_running_job_recovers(tmp_path, clock):
    """jobs.sqlite3 written by the schema without the run and lease columns (an existing deployment)."""
    path = tmp_path / "old.sqlite3"
    store = SqliteJobStore(path, clock=clock)
    job = store.create(new_job())
    store.claim_next()
    store.close()
    db = sqlite3.connect(path)
    for column in ("holder", "lease_until", "run"):
        db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    db.commit()
    db.close()
    store = SqliteJobStore(path, clock=clock)
    (back,) = store.recover(max_attempts=3)  # no lease recorded: nothing to wait for
    assert back.job_id == job.job_id and store.claim_next().attempts == 2
    store.close()


def test_sqlite_file_from_before_owners_opens_with_unowned_jobs(tmp_path, clock):
    """jobs.sqlite3 written before jobs had an owner: the column is added, old jobs belong to '' (keys off)."""
    path = tmp_path / "old.sqlite3"
    store = SqliteJobStore(path, clock=clock)
    job = store.create(new_job(owner="key:0123456789abcdef"))
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN owner")
    db.commit()
    db.close()
    store = SqliteJobStore(path, clock=clock)
    assert store.get(job.job_id).owner == ""
    assert store.create(new_job(owner="key:fedcba9876543210")).owner == "key:fedcba9876543210"
    store.close()


def test_the_owner_is_stored_but_never_shown(store, reopen):
    job = store.create(new_job(owner="key:0123456789abcdef", webhook=True))
    store.claim_next()
    store.finish(job.job_id, TRANSCRIPT)
    again = reopen().get(job.job_id)
    assert again.owner == "key:0123456789abcdef" and again.status is JobStatus.succeeded
    assert "owner" not in again.model_dump() and "owner" not in job_json(again)


def test_lifecycle(store, clock):
    job = store.create(new_job())
    assert store.get(job.job_id) == job and job.status is JobStatus.queued
    claimed = store.claim_next()
    assert claimed.job_id == job.job_id and claimed.status is JobStatus.running and claimed.attempts == 1
    assert store.claim_next() is None
    assert store.update_progress(job.job_id, 14.0, 28.0)
    assert store.get(job.job_id).progress == Progress(done=14.0, total=28.0)
    clock.t += 5
    assert store.finish(job.job_id, TRANSCRIPT)
    done = store.get(job.job_id)
    assert done.status is JobStatus.succeeded and done.result == TRANSCRIPT and done.progress.done == 28.0
    assert (done.finished_at - done.started_at).total_seconds() == pytest.approx(5)
    assert not store.finish(job.job_id, TRANSCRIPT) and not store.fail(job.job_id, JobError(code="x", message="y"))
    with pytest.raises(JobConflict) as info:
        store.cancel(job.job_id)
    assert info.value.status == 409


def test_claims_oldest_first(store):
    newer = store.create(new_job(created=1_000_005.0))
    older = store.create(new_job(created=1_000_001.0))
    assert [store.claim_next().job_id, store.claim_next().job_id] == [older.job_id, newer.job_id]


def test_never_claims_twice(store, reopen):
    jobs = [store.create(new_job(created=1_000_000.0 + i)) for i in range(20)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claim():
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.job_id for j in jobs) and len(set(claimed)) == 20
    assert reopen().claim_next() is None


def test_cancel_running_job_stops_its_progress_and_result(store):
    job = store.create(new_job())
    store.claim_next()
    cancelled = store.cancel(job.job_id)
    assert cancelled.status is JobStatus.cancelled and cancelled.finished_at
    assert not store.update_progress(job.job_id, 1.0, 28.0)  # the worker learns it should stop
    assert not store.finish(job.job_id, TRANSCRIPT)
    assert store.get(job.job_id).status is JobStatus.cancelled and store.get(job.job_id).result is None


def test_unknown_job(store):
    with pytest.raises(JobNotFound):
        store.get("f" * 32)
    with pytest.raises(JobNotFound):
        store.cancel("f" * 32)
    with pytest.raises(JobNotFound):
        store.deliveries("f" * 32)


def test_recover_waits_for_the_lease_then_requeues_then_fails_with_a_reason(store, reopen, clock):
    job = store.create(new_job(webhook=True))
    waiting = store.create(new_job(created=1_000_001.0))
    store.claim_next()
    store.close()  # the worker dies with the job running

    store = reopen()
    clock.t += LEASE_S - 1
    assert store.recover(max_attempts=2) == []  # leased still: its worker may be alive
    clock.t += 1
    recovered = store.recover(max_attempts=2)
    assert [(j.job_id, j.status) for j in recovered] == [(job.job_id, JobStatus.queued)]
    assert store.get(waiting.job_id).status is JobStatus.queued
    again = store.claim_next()
    assert again.job_id == job.job_id and again.attempts == 2
    store.close()

    store = reopen()
    clock.t += LEASE_S
    (failed,) = store.recover(max_attempts=2)
    assert failed.status is JobStatus.failed and failed.error.code == "interrupted"
    assert "2 time(s)" in failed.error.message and "JOB_MAX_ATTEMPTS" in failed.error.message
    assert failed.webhook.state == "pending"  # the failure is called back too
    assert store.due_webhooks(clock.t, 10)[0].job_id == job.job_id


def test_a_second_server_waits_for_the_first_ones_lease_whoever_holds_it(store, reopen, clock):
    """Two stores on one storage (two servers, or one restarted): a live lease stays with its holder."""
    job = store.create(new_job())
    store.claim_next()
    second = reopen()
    assert second.instance_id != store.instance_id
    assert second.recover(max_attempts=2) == [] and second.claim_next() is None
    assert not second.heartbeat(job.job_id)  # not its run: it cannot keep the job alive either
    clock.t += LEASE_S * 0.9
    assert store.heartbeat(job.job_id)  # the holder is alive
    clock.t += LEASE_S * 0.9
    assert second.recover(max_attempts=2) == []
    clock.t += LEASE_S * 0.1  # the holder fell silent: its lease lapses
    (back,) = second.recover(max_attempts=2)
    assert back.job_id == job.job_id and back.status is JobStatus.queued and back.progress.done == 0.0
    assert second.claim_next().attempts == 2
    assert not store.update_progress(job.job_id, 1.0, 28.0)  # the first server's run has lost it


def test_progress_and_heartbeats_renew_the_lease(store, reopen, clock):
    job = store.create(new_job())
    store.claim_next()
    sweeper = reopen()
    for renew in (lambda: store.update_progress(job.job_id, 7.0, 28.0), lambda: store.heartbeat(job.job_id)):
        clock.t += LEASE_S * 0.8
        assert renew() and sweeper.recover(max_attempts=3) == []
    clock.t += LEASE_S * 0.8
    assert sweeper.recover(max_attempts=3) == []  # renewed 0.8 of a lease ago
    clock.t += LEASE_S * 0.2
    assert [j.status for j in sweeper.recover(max_attempts=3)] == [JobStatus.queued]


def test_a_run_that_lost_its_lease_is_refused_everything(store, reopen, clock):
    job = store.create(new_job())
    store.claim_next()
    clock.t += LEASE_S  # the worker stalled past its lease...
    other = reopen()
    (back,) = other.recover(max_attempts=3)
    assert back.status is JobStatus.queued
    assert not store.update_progress(job.job_id, 5.0, 28.0)  # lost even before anyone claims it again
    taken = other.claim_next()
    assert taken.job_id == job.job_id and taken.attempts == 2
    # ...and came back: whatever it does now is refused, so it stops and cannot end the job
    assert not store.update_progress(job.job_id, 5.0, 28.0)
    assert not store.heartbeat(job.job_id)
    assert not store.release(job.job_id)
    assert not store.finish(job.job_id, TRANSCRIPT)
    assert not store.fail(job.job_id, JobError(code="x", message="y"))
    assert other.get(job.job_id).progress.done == 0.0
    assert other.update_progress(job.job_id, 9.0, 28.0) and other.finish(job.job_id, TRANSCRIPT)
    done = store.get(job.job_id)
    assert done.status is JobStatus.succeeded and done.attempts == 2 and done.result == TRANSCRIPT


def test_a_lease_lapses_on_the_wall_clock(store, reopen):
    job = store.create(new_job())
    wall = reopen()
    wall.clock, wall.lease_s = time.time, 0.2
    assert wall.claim_next().job_id == job.job_id
    sweeper = reopen()
    sweeper.clock = time.time
    assert sweeper.recover(max_attempts=3) == []
    time.sleep(0.25)
    assert [j.job_id for j in sweeper.recover(max_attempts=3)] == [job.job_id]
    assert not wall.update_progress(job.job_id, 1.0, 28.0)


def test_release_does_not_count_the_attempt(store):
    job = store.create(new_job())
    store.claim_next()
    assert store.release(job.job_id)
    back = store.get(job.job_id)
    assert back.status is JobStatus.queued and back.attempts == 0 and back.started_at is None


def test_delete_expired_keeps_jobs_with_pending_webhooks(store, clock):
    plain = store.create(new_job())
    hooked = store.create(new_job(webhook=True, created=1_000_001.0))
    running = store.create(new_job(created=1_000_002.0))
    for _ in range(3):
        store.claim_next()
    store.finish(plain.job_id, TRANSCRIPT)
    store.fail(hooked.job_id, JobError(code="boom", message="it broke"))
    clock.t += 100
    assert store.delete_expired(clock.t - 200) == []
    assert [j.job_id for j in store.delete_expired(clock.t)] == [plain.job_id]
    assert store.get(hooked.job_id).webhook.state == "pending"
    attempt = DeliveryAttempt(
        attempt=1, at=datetime.now(timezone.utc), url="https://example.com/hook", status_code=200, duration_ms=3.0,
        outcome="delivered",
    )
    store.add_delivery(hooked.job_id, attempt, retry_at=None)
    assert [j.job_id for j in store.delete_expired(clock.t)] == [hooked.job_id]
    assert store.get(running.job_id).status is JobStatus.running
    with pytest.raises(JobNotFound):
        store.get(plain.job_id)


def test_deliveries_and_webhook_state(store, clock):
    job = store.create(new_job(webhook=True))
    store.claim_next()
    assert store.due_webhooks(clock.t, 10) == []  # nothing to send before the job ends
    store.finish(job.job_id, TRANSCRIPT)
    (due,) = store.due_webhooks(clock.t, 10)
    assert due.webhook.state == "pending" and due.webhook.id.startswith("msg_")

    def attempt(n, code, outcome):
        return DeliveryAttempt(
            attempt=n, at=datetime.now(timezone.utc), url=job.webhook.url, status_code=code, duration_ms=1.0,
            outcome=outcome, error=None if code == 200 else f"HTTP {code}",
        )

    store.add_delivery(job.job_id, attempt(1, 503, "retry"), retry_at=clock.t + 30)
    assert store.due_webhooks(clock.t, 10) == [] and len(store.due_webhooks(clock.t + 30, 10)) == 1
    store.add_delivery(job.job_id, attempt(2, 200, "delivered"), retry_at=None)
    assert store.get(job.job_id).webhook.state == "delivered" and store.due_webhooks(clock.t + 99, 10) == []
    assert [(d.attempt, d.status_code, d.outcome) for d in store.deliveries(job.job_id)] == [
        (1, 503, "retry"),
        (2, 200, "delivered"),
    ]
