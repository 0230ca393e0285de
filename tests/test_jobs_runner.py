"""The job runner's threads with a stand-in transcription service: cancel mid-run, a clean shutdown that
puts the job back in the queue, failures with a reason, and expiry that takes uploaded clips along."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
from audio_fixtures import ONE_SPEAKER
from jobs_support import ThreadedServer, assert_error
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.core.config import Settings
from shared.core.domain import ClipInfo, Segment, TranscribeOptions, Transcript
from shared.core.errors import ClipNotFound
from shared.jobs.model import Job, JobStatus, Progress, new_job_id
from shared.jobs.executor import JobExecutor
from shared.jobs.sqlite_store import SqliteJobStore
from test_jobs_store import Clock
from shared.media.clip_store import ClipStore, new_clip_id


class SlowService:
    """Reports progress every 50 ms for `seconds` (quiet: none, like one long stage), then returns a
    one-segment transcript."""

    def __init__(self, clips: ClipStore, seconds: float = 5.0, error: Exception | None = None, quiet: bool = False):
        self.clips = clips
        self.seconds = seconds
        self.error = error
        self.quiet = quiet
        self.started = threading.Event()
        self.runs = 0

    def transcribe_clip(self, clip_id, options, on_progress, cancel=None, owner=""):
        self.started.set()
        self.runs += 1
        steps = int(self.seconds / 0.05)
        for i in range(steps):
            if cancel is not None:
                cancel.check()  # as a pipeline's wait on a stage ends when its token is cancelled
            if not self.quiet:
                on_progress(i * 0.05, self.seconds)
            time.sleep(0.05)
        if self.error:
            raise self.error
        return Transcript(segments=[Segment(start=0, end=1, text="done")], language="en", duration=self.seconds)


@pytest.fixture
def store(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def add_clip(clips: ClipStore, tmp_path) -> str:
    staged = tmp_path / "staged.audio"
    staged.write_bytes(b"audio")
    info = ClipInfo(clip_id=new_clip_id(), size_bytes=5, duration=1.0, created_at=datetime.now(timezone.utc))
    return clips.add(staged, info).clip_id


def queue(store, clip_id="a" * 32, owns_clip=False) -> Job:
    return store.create(
        Job(job_id=new_job_id(), status=JobStatus.queued, clip_id=clip_id, owns_clip=owns_clip,
            options=TranscribeOptions(), created_at=datetime.now(timezone.utc), progress=Progress(total=5.0))
    )  # fmt: skip


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_cancel_stops_a_running_job(store, tmp_path):
    service = SlowService(ClipStore(tmp_path))
    finished = []
    runner = JobExecutor(store, service, on_finished=finished.append, poll_s=0.05).start()
    try:
        job = queue(store)
        assert service.started.wait(5)
        wait_until(lambda: store.get(job.job_id).progress.done > 0)
        store.cancel(job.job_id)
        nxt = queue(store)  # the worker comes free at once for the next job
        wait_until(lambda: store.get(nxt.job_id).status is JobStatus.running, timeout=3)
    finally:
        runner.close()
    assert store.get(job.job_id).status is JobStatus.cancelled and store.get(job.job_id).result is None
    assert finished == []


def test_cancel_reaches_a_run_that_reports_no_progress(tmp_path):
    """One long stage: no progress report comes. The heartbeat sees the job is no longer running here and
    cancels the run's token, so the worker comes free well before the 30 s stage would have ended."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", lease_s=0.4)
    service = SlowService(ClipStore(tmp_path), seconds=30, quiet=True)
    runner = JobExecutor(store, service, poll_s=0.05).start()
    try:
        job = queue(store)
        assert service.started.wait(5)
        store.cancel(job.job_id)
        nxt = queue(store)
        wait_until(lambda: store.get(nxt.job_id).status is not JobStatus.queued, timeout=10)
        assert store.get(job.job_id).status is JobStatus.cancelled and service.runs == 2
    finally:
        runner.close()
        store.close()


def test_clean_shutdown_puts_the_job_back(store, tmp_path):
    service = SlowService(ClipStore(tmp_path), seconds=30)
    runner = JobExecutor(store, service, poll_s=0.05).start()
    job = queue(store)
    assert service.started.wait(5)
    started = time.monotonic()
    assert runner.close()
    assert time.monotonic() - started < 2
    back = store.get(job.job_id)
    assert back.status is JobStatus.queued and back.attempts == 0  # a clean stop does not use up an attempt


def test_a_second_server_leaves_a_job_alone_while_its_first_servers_heartbeats_keep_the_lease(tmp_path):
    """Two servers (an executor over its own store each) on one SQLite file. The first runs a job with no
    progress for three leases' time (one long stage): its heartbeats keep the lease, so the second,
    started meanwhile and recovering lapsed leases a few times a lease, never runs the job again."""
    path = tmp_path / "jobs.sqlite3"
    first_store, second_store = SqliteJobStore(path, lease_s=1.0), SqliteJobStore(path, lease_s=1.0)
    first = SlowService(ClipStore(tmp_path), seconds=3.0, quiet=True)
    second = SlowService(ClipStore(tmp_path), seconds=0.1)
    one = JobExecutor(first_store, first, poll_s=0.05).start()
    two = None
    try:
        job = queue(first_store)
        assert first.started.wait(5)
        two = JobExecutor(second_store, second, poll_s=0.05).start()
        wait_until(lambda: first_store.get(job.job_id).finished, timeout=30)
    finally:
        one.close()
        if two:
            two.close()
    done = second_store.get(job.job_id)
    assert done.status is JobStatus.succeeded and done.attempts == 1 and second.runs == 0
    first_store.close()
    second_store.close()


def test_a_restarted_or_second_server_takes_a_dead_servers_job_once_its_lease_lapsed(tmp_path):
    """The first server claimed a job and died (no heartbeats). A server starting on the same storage
    leaves it while its lease is alive, and runs it (attempt 2) once the lease has lapsed."""
    path, clock = tmp_path / "jobs.sqlite3", Clock()
    dead = SqliteJobStore(path, clock=clock, lease_s=30.0)
    job = queue(dead)
    assert dead.claim_next().job_id == job.job_id
    dead.close()  # ...and the process is gone
    store = SqliteJobStore(path, clock=clock, lease_s=30.0)
    service = SlowService(ClipStore(tmp_path), seconds=0.1)
    runner = JobExecutor(store, service, poll_s=0.05).start()
    try:
        clock.t += 29.0
        assert runner.recover() == []
        assert store.get(job.job_id).status is JobStatus.running and service.runs == 0
        clock.t += 1.0
        assert [j.job_id for j in runner.recover()] == [job.job_id]
        wait_until(lambda: store.get(job.job_id).finished)
    finally:
        runner.close()
    done = store.get(job.job_id)
    assert done.status is JobStatus.succeeded and done.attempts == 2 and service.runs == 1
    store.close()


def test_failures_keep_their_code(store, tmp_path):
    finished = []
    service = SlowService(ClipStore(tmp_path), seconds=0.1, error=ClipNotFound("no clip with id x"))
    runner = JobExecutor(store, service, on_finished=finished.append, poll_s=0.05).start()
    try:
        job = queue(store)
        wait_until(lambda: store.get(job.job_id).finished)
    finally:
        runner.close()
    failed = store.get(job.job_id)
    assert failed.status is JobStatus.failed and failed.error.code == "clip_not_found"
    assert [j.job_id for j in finished] == [job.job_id]


def test_expiry_deletes_uploaded_clips_only(store, tmp_path):
    clips = ClipStore(tmp_path / "store")
    service = SlowService(clips, seconds=0.05)
    runner = JobExecutor(store, service, poll_s=0.05, result_ttl_s=60)
    uploaded, shared = add_clip(clips, tmp_path), add_clip(clips, tmp_path)
    a, b = queue(store, uploaded, owns_clip=True), queue(store, shared)
    runner.start()
    try:
        wait_until(lambda: store.get(a.job_id).finished and store.get(b.job_id).finished)
    finally:
        runner.close()
    assert runner.delete_expired(now=time.time()) == []  # not yet
    assert {j.job_id for j in runner.delete_expired(now=time.time() + 61)} == {a.job_id, b.job_id}
    with pytest.raises(ClipNotFound):
        clips.get(uploaded)
    assert clips.get(shared).clip_id == shared


def test_results_expire_on_a_real_server(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, job_result_ttl_s=1)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        with open(ONE_SPEAKER, "rb") as f:
            job = c.post("/api/transcriptions", params={"wait": True}, files={"file": f}).json()
        assert job["status"] == "failed"  # no models here; expiry does not care how a job ended
        deadline = time.monotonic() + 10
        while c.get(job["links"]["self"]).status_code == 200:
            assert time.monotonic() < deadline, "the job was not deleted"
            time.sleep(0.2)
        assert_error(c.get(job["links"]["self"]), 404, "job_not_found")
        assert_error(c.get(job["links"]["clip"]), 404, "clip_not_found")
