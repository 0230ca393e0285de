"""Job states have one source, JobStatus (shared/jobs/model.py): the store, the metrics and the page read
it. A state added to the enum fails here until every one of them handles it."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from test_jobs_store import TRANSCRIPT, new_job

from shared.api.app import create_app
from shared.api.ops import JobCollector
from shared.api.web import STATIC_DIR
from shared.core.config import Settings
from shared.jobs.model import ENDED, TERMINAL, JobError, JobStatus
from shared.jobs.sqlite_store import SqliteJobStore


def _claimed(store, job):
    store.claim(job.job_id)


# How a job gets into each state through the store's port
REACH = {
    JobStatus.queued: lambda store, job: None,
    JobStatus.running: _claimed,
    JobStatus.succeeded: lambda store, job: (_claimed(store, job), store.finish(job.job_id, TRANSCRIPT)),
    JobStatus.failed: lambda store, job: store.fail(job.job_id, JobError(code="x", message="y")),
    JobStatus.cancelled: lambda store, job: store.cancel(job.job_id),
}


@pytest.fixture
def store_in_every_state(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", clock=lambda: 1_000_000.0)
    assert set(REACH) == set(JobStatus), "a new job state: say here how a job reaches it"
    ids = {}
    for status, reach in REACH.items():
        job = store.create(new_job())
        reach(store, job)
        assert store.get(job.job_id).status is status
        ids[status] = job.job_id
    yield store, ids
    store.close()


def test_terminal_states_are_the_ended_ones():
    assert set(ENDED) == TERMINAL == {s for s in JobStatus if s.terminal}
    assert not JobStatus.queued.terminal and not JobStatus.running.terminal


def test_the_store_counts_and_expires_by_the_enum(store_in_every_state):
    store, ids = store_in_every_state
    assert store.count_by_status() == {s.value: 1 for s in JobStatus}
    expired = {j.job_id for j in store.delete_expired(2_000_000.0)}
    assert expired == {ids[s] for s in TERMINAL}


def test_metrics_export_every_state(store_in_every_state):
    store, _ = store_in_every_state
    app = SimpleNamespace(state=SimpleNamespace(jobs=SimpleNamespace(store=store)))
    (family,) = JobCollector(app).collect()
    assert {s.labels["status"]: s.value for s in family.samples} == {s.value: 1 for s in JobStatus}


def test_the_page_gets_the_terminal_states_and_labels_every_state(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    with TestClient(create_app(settings), base_url="http://localhost") as client:  # a host the server answers
        config = client.get("/web/config").json()
    assert config["terminal_job_states"] == [s.value for s in ENDED]
    upload = (STATIC_DIR / "upload.js").read_text()
    labels = re.search(r"const text = \{(.*?)\}\[job\.status\]", upload, re.S).group(1)
    assert set(re.findall(r"^\s*(\w+):", labels, re.M)) == {s.value for s in JobStatus}
    js = "\n".join(p.read_text() for p in STATIC_DIR.glob("*.js"))
    assert '"cancelled"' not in js  # the page reads the ended states from /web/config
