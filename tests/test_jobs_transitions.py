"""The job state machine itself (shared/jobs/transitions.py): pure functions, no store.

Plain cases for each transition, then a property: over any sequence of events from two workers, a web
client and a sweeper, only the current run can write, a job ends once, and attempts count claims."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.domain import Segment, TranscribeOptions, Transcript
from shared.jobs import transitions as T
from shared.jobs.model import Job, JobError, JobStatus, Progress, Webhook, WebhookState
from shared.jobs.transitions import Refusal, Stored

NOW = 1_000_000.0
LEASE = 30.0
RESULT = Transcript(segments=[Segment(start=0.0, end=1.0, text="hi")], language="en", duration=28.0)
ERROR = JobError(code="boom", message="it broke")


def queued(webhook: bool = True) -> Stored:
    return T.create(
        Job(
            job_id="a" * 32, status=JobStatus.queued, clip_id="b" * 32, options=TranscribeOptions(),
            created_at=datetime.fromtimestamp(NOW, timezone.utc), progress=Progress(total=28.0),
            webhook=Webhook(url="https://example.com/h", id="msg_1") if webhook else None,
        )
    )  # fmt: skip


def running() -> Stored:
    return T.claim(queued(), now=NOW, lease_s=LEASE)


def test_claim_starts_a_leased_run():
    s = running()
    assert s.job.status is JobStatus.running and s.job.attempts == 1 and s.run == 1
    assert s.lease_until == NOW + LEASE and s.job.started_at.timestamp() == NOW
    assert T.claim(s, now=NOW, lease_s=LEASE) == Refusal("not_queued", "running")


def test_progress_renews_the_lease_of_the_current_run_only():
    s = T.progress(running(), run=1, done=7.0, total=28.0, now=NOW + 20, lease_s=LEASE)
    assert s.job.progress == Progress(done=7.0, total=28.0) and s.lease_until == NOW + 20 + LEASE
    assert T.progress(s, run=2, done=8.0, total=28.0, now=NOW, lease_s=LEASE).reason == "lost_lease"
    assert T.heartbeat(s, run=0, now=NOW, lease_s=LEASE).reason == "lost_lease"


def test_a_lease_names_its_holder_and_only_the_holder_renews_it():
    s = T.claim(T.create(running().job.model_copy(update={"status": JobStatus.queued})), now=NOW, lease_s=LEASE,
                holder="server-a")  # fmt: skip
    assert s.holder == "server-a"
    assert T.heartbeat(s, run=s.run, now=NOW + 5, lease_s=LEASE, holder="server-b").reason == "lost_lease"
    renewed = T.heartbeat(s, run=s.run, now=NOW + 5, lease_s=LEASE, holder="server-a")
    assert renewed.lease_until == NOW + 5 + LEASE and renewed.holder == "server-a"
    back = T.recover(renewed, now=NOW + 5 + LEASE, max_attempts=3)
    assert back.job.status is JobStatus.queued and back.holder is None and back.lease_until is None


def test_recover_waits_for_the_lease_then_requeues_then_fails():
    s = T.progress(running(), run=1, done=7.0, total=28.0, now=NOW, lease_s=LEASE)
    assert T.recover(s, now=NOW + LEASE - 0.1, max_attempts=2).reason == "lease_alive"
    back = T.recover(s, now=NOW + LEASE, max_attempts=2)
    assert back.job.status is JobStatus.queued and back.lease_until is None and back.job.progress.done == 0.0
    assert back.job.attempts == 1 and back.run == 1  # the run number stays: the next claim makes run 2
    again = T.claim(back, now=NOW + 40, lease_s=LEASE)
    assert again.run == 2 and again.job.attempts == 2
    assert T.finish(again, run=1, result=RESULT, now=NOW + 41).reason == "lost_lease"  # the stalled run
    assert T.recover(again, now=NOW + 40, max_attempts=2).reason == "lease_alive"  # whoever asks
    failed = T.recover(again, now=NOW + 40 + LEASE, max_attempts=2)
    assert failed.job.status is JobStatus.failed and failed.job.error.code == T.INTERRUPTED
    assert failed.job.webhook.state is WebhookState.pending


def test_finish_ends_the_job_and_makes_its_webhook_due():
    done = T.finish(running(), run=1, result=RESULT, now=NOW + 5)
    assert done.job.status is JobStatus.succeeded and done.job.result == RESULT and done.lease_until is None
    assert done.job.progress.done == 28.0
    assert done.job.webhook.state is WebhookState.pending and done.job.webhook.next_attempt_at == done.job.finished_at
    assert T.cancel(done, now=NOW).reason == "finished" and T.fail(done, run=None, error=ERROR, now=NOW).reason


def test_fail_cancel_and_release():
    assert T.fail(queued(), run=None, error=ERROR, now=NOW).job.status is JobStatus.failed
    assert T.fail(queued(), run=1, error=ERROR, now=NOW).reason == "not_running"
    assert T.cancel(running(), now=NOW).job.webhook.state is None  # a cancel calls nobody back
    back = T.release(running(), run=1)
    assert back.job.status is JobStatus.queued and back.job.attempts == 0 and back.job.started_at is None


@pytest.mark.parametrize(
    ("outcome", "retry_at", "state"),
    [("delivered", None, WebhookState.delivered), ("retry", NOW + 9, WebhookState.pending), ("failed", None, WebhookState.failed)],
)
def test_delivery_bookkeeping(outcome, retry_at, state):
    hook = T.delivered(T.finish(running(), run=1, result=RESULT, now=NOW), outcome=outcome, retry_at=retry_at).job.webhook
    assert hook.state is state and (hook.next_attempt_at is None) == (retry_at is None)
    assert T.delivered(queued(webhook=False), outcome=outcome, retry_at=retry_at) == Refusal("no_webhook")


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "progress", "heartbeat", "finish", "fail", "release", "cancel", "recover", "wait"]),
        st.integers(min_value=0, max_value=3),  # the run the event comes from (0: a caller without one)
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_any_history_keeps_the_invariants(events):
    s, now, claims, releases, ends = queued(), NOW, 0, 0, 0
    for name, run in events:
        r = run or None
        step = {
            "claim": lambda: T.claim(s, now=now, lease_s=LEASE),
            "progress": lambda: T.progress(s, run=r, done=1.0, total=28.0, now=now, lease_s=LEASE),
            "heartbeat": lambda: T.heartbeat(s, run=r, now=now, lease_s=LEASE),
            "finish": lambda: T.finish(s, run=r, result=RESULT, now=now),
            "fail": lambda: T.fail(s, run=r, error=ERROR, now=now),
            "release": lambda: T.release(s, run=r),
            "cancel": lambda: T.cancel(s, now=now),
            "recover": lambda: T.recover(s, now=now, max_attempts=3),
            "wait": lambda: s,
        }[name]
        before, new = s, step()
        if name == "wait":
            now += LEASE / 2
            continue
        if isinstance(new, Refusal):
            continue
        if before.job.finished:
            pytest.fail(f"{name} changed a finished job")
        if before.job.status is JobStatus.running and name in ("progress", "heartbeat", "finish", "fail", "release"):
            assert r in (None, before.run)  # only the current run (or a caller without one) writes
        claims += name == "claim"
        releases += name == "release"
        ends += new.job.finished
        s = new
        assert (s.lease_until is not None) == (s.job.status is JobStatus.running)
        assert s.job.attempts == claims - releases and s.run == claims
        assert ends <= 1
