"""Jobs on Modal (functions/modal_jobs.py and the run_job, deliver_webhook and sweep_jobs functions),
at the boundary: no cloud here.

- The functions' settings, read back with `.info()` (and the deploy definition for autoscaling).
- Function bodies run with `.local()`: run_job on real audio through the ModalRunner (stages with
  .local() too), deliver_webhook against a real receiver on loopback, sweep_jobs.
- The web endpoint's app (`web.local()`) hands jobs to `.spawn()`; here the spawn is `LocalSpawn`, the
  test double that calls the same function with `.local()` on a thread (tests/modal_doubles.py).
- The job Dict is `MemoryDict`, the in-memory stand-in for modal.Dict (tests/test_modal_jobs_store.py).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS
from fastapi.testclient import TestClient
from jobs_support import WEBHOOK_SECRET, WebhookReceiver, wait_for_job
from modal_doubles import LocalDeployment, MemoryDict
from standardwebhooks import Webhook as ReferenceWebhook
from test_jobs_api import NoModels
from test_jobs_store import TRANSCRIPT, new_job
from test_modal_app import deploy_definition

from functions import app as modal_app
from functions.dict_job_store import DictJobStore
from functions.modal_jobs import JobWorker, ModalSpawn
from functions.settings import DATA_PATH, get_modal_settings
from functions.volume_clips import VolumeClipStore
from shared.api.app import create_app
from shared.core.config import Settings
from shared.core.domain import ClipInfo, Segment, SpeakerHints, TranscribeOptions, Transcript
from shared.jobs.model import JobError, JobStatus
from shared.jobs.manager import JobManager
from shared.media.clip_store import new_clip_id

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")

S = get_modal_settings()
JOB_FUNCTIONS = {
    "run_job": (modal_app.run_job, S.jobs),
    "deliver_webhook": (modal_app.deliver_webhook, S.webhooks),
    "sweep_jobs": (modal_app.sweep_jobs, S.sweep),
}


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    """This process as the whole deployment (functions/local.py), a fresh stand-in Dict, storage in tmp."""
    monkeypatch.setenv("AUDIO_STORAGE_PATH", str(tmp_path / "data"))
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("WEBHOOK_BACKOFF_S", "0.2")
    local = LocalDeployment()
    local.build()
    yield local
    local.close()


@pytest.fixture
def local_jobs(deployment):
    assert modal_app.jobs_worker() is deployment.worker
    return deployment.worker


# --- the functions' settings --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(JOB_FUNCTIONS))
def test_job_functions_take_their_resources_from_the_settings_module(name):
    fn, spec = JOB_FUNCTIONS[name]
    info = fn.info()
    assert info.gpus == []  # every job function is CPU only: the GPU work is in the stage classes
    assert info.cpu == spec.cpu and info.memory_mib == spec.memory_mib
    assert info.timeout == spec.timeout_s and info.max_retries == (spec.retries or None)
    d = deploy_definition(fn)
    assert d["min_containers"] == 0 and d["max_containers"] == spec.max_containers
    assert d["scaledown_window"] == spec.scaledown_window_s and d["enable_memory_snapshot"] is True
    env = [s for s in info.secrets if s.startswith("Secret.from_dict")]
    assert len(env) == 1 and "AUDIO_STORAGE_PATH" in env[0]  # the service settings, as every function


def test_run_job():
    info = modal_app.run_job.info()
    assert info.cpu == 2.0 and info.timeout == 3600 > S.diarizer.timeout_s  # outlives its longest stage call
    assert info.max_retries is None  # a dead run's job goes back to the queue through the sweep, not retries
    assert info.concurrency_info.max_inputs == S.jobs.max_inputs == 8  # a job mostly waits on GPU functions
    assert set(info.volumes) == {DATA_PATH} and info.volumes[DATA_PATH].name == S.data_volume  # the clips
    assert info.volumes[DATA_PATH].read_only is False
    assert not [s for s in info.secrets if "from_name" in s]  # no API keys, no token: it signs nothing
    assert info.web_info is None and info.schedule is None


def test_deliver_webhook():
    info = modal_app.deliver_webhook.info()
    assert f"modal.Secret.from_name('{S.api_secret}')" in info.secrets  # WEBHOOK_SECRET lives there
    assert info.volumes == {} and info.cpu == 0.25 and info.max_retries is None
    assert info.concurrency_info.max_inputs == 100  # deliverers mostly sleep between attempts
    assert info.timeout == 900


def test_sweep_jobs_runs_on_a_schedule():
    info = modal_app.sweep_jobs.info()
    assert info.schedule == f"Period(seconds={S.sweep_period_s})" and S.sweep_period_s == 300
    assert set(info.volumes) == {DATA_PATH}  # it deletes expired uploads
    assert deploy_definition(modal_app.sweep_jobs)["max_containers"] == 1
    assert info.concurrency_info is None


def test_the_web_endpoint_now_scales_out():
    assert deploy_definition(modal_app.web)["max_containers"] == S.web.max_containers == 10


def test_job_settings_are_checked():
    from functions.settings import ModalSettings

    assert S.job_lease_s == 120 and S.job_heartbeat_s == 30
    with pytest.raises(ValueError, match="third"):
        ModalSettings(_env_file=None, job_lease_s=60, job_heartbeat_s=30)


def test_deployed_containers_use_the_named_dict_and_spawn(monkeypatch, tmp_path):
    """Not in process: the Dict from settings.jobs_dict, `.spawn()` and the data Volume (built offline)."""
    monkeypatch.setenv("AUDIO_STORAGE_PATH", str(tmp_path))
    monkeypatch.setattr(modal_app, "_jobs", None)
    worker = modal_app.jobs_worker()
    assert modal_app.jobs_worker() is worker  # one per container
    assert worker.store.d is modal_app.jobs_dict and worker.store.lease_s == S.job_lease_s
    assert isinstance(worker.spawn_run, ModalSpawn) and worker.spawn_run.fn is modal_app.run_job
    assert isinstance(worker.spawn_deliver, ModalSpawn) and worker.spawn_deliver.fn is modal_app.deliver_webhook
    assert isinstance(worker.clips, VolumeClipStore) and worker.clips.volume is modal_app.data_volume


# --- the seam in JobManager: dispatch instead of job threads ------------------------------------------


def test_a_job_the_dispatcher_refused_is_still_accepted_and_the_sweep_spawns_it(tmp_path):
    d = MemoryDict()

    def refuse(job):
        raise ConnectionError("Modal is unreachable")

    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    app = create_app(settings, runner=NoModels(), job_store=DictJobStore(d), dispatch=refuse)
    with TestClient(app, base_url="http://localhost") as c:  # without keys, a loopback host name
        with open(ONE_SPEAKER, "rb") as f:
            r = c.post("/api/transcriptions", params={"diarize": False}, files={"file": f})
        assert r.status_code == 202, r.text  # stored before the dispatch: accepted
        job = r.json()
        assert c.get(job["links"]["self"]).json()["status"] == "queued"

    spawned = []
    worker = JobWorker(
        settings, DictJobStore(d), VolumeClipStore(tmp_path), runner_factory=NoModels,
        spawn_run=spawned.append, spawn_deliver=spawned.append, redispatch_after_s=600,
    )  # fmt: skip
    assert worker.sweep()["redispatched"] == 0  # not yet: its spawn may just be waiting for a container
    assert worker.sweep(now=time.time() + 601)["redispatched"] == 1 and spawned == [job["job_id"]]


# --- run_job: claiming, heartbeats, the sweep's recovery (a stand-in service, no models) -----------------------------


class StubService:
    """transcribe_clip reporting progress for `seconds`, as TranscriptionService does."""

    def __init__(self, clips, seconds: float = 0.3):
        self.clips = clips
        self.seconds = seconds
        self.runs = 0

    def transcribe_clip(self, clip_id, options, on_progress, cancel=None, owner=""):
        self.runs += 1
        for i in range(int(self.seconds / 0.05)):
            on_progress(i * 0.05, self.seconds)
            time.sleep(0.05)
        return Transcript(segments=[Segment(start=0, end=1, text="done")], language="en", duration=self.seconds)


def stub_worker(tmp_path, d, *, lease_s=0.6, heartbeat_s=0.1, spawned=None):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, job_max_attempts=2)
    clips = VolumeClipStore(tmp_path)
    spawned = spawned if spawned is not None else []
    worker = JobWorker(
        settings, DictJobStore(d, lease_s=lease_s), clips, runner_factory=NoModels,
        spawn_run=spawned.append, spawn_deliver=lambda job_id: spawned.append(("deliver", job_id)),
        heartbeat_s=heartbeat_s,
    )  # fmt: skip
    worker._service = StubService(clips)
    worker.spawned = spawned
    return worker


def test_run_job_runs_a_queued_job_once(tmp_path):
    d = MemoryDict()
    worker = stub_worker(tmp_path, d)
    job = worker.store.create(new_job(webhook=True))
    assert worker.run(job.job_id) == "succeeded"
    assert worker.run(job.job_id) == "succeeded" and worker.service.runs == 1  # a duplicate spawn: no second run
    done = worker.store.get(job.job_id)
    assert done.attempts == 1 and done.result.segments[0].text == "done" and done.webhook.state == "pending"
    assert worker.spawned == [("deliver", job.job_id)]  # the webhook went to a deliverer
    assert worker.run("f" * 32) == "gone"
    with pytest.raises(Exception, match="malformed job_id"):
        worker.run("../../etc")


def test_a_heartbeat_keeps_a_long_job_from_being_taken_over(tmp_path):
    d = MemoryDict()
    worker = stub_worker(tmp_path, d, lease_s=0.6, heartbeat_s=0.1)
    worker._service.seconds = 2.0  # progress every 50 ms, and heartbeats every 100 ms besides
    job = worker.store.create(new_job())
    thread = threading.Thread(target=worker.run, args=(job.job_id,))
    thread.start()
    sweeper = DictJobStore(d, lease_s=0.6)
    deadline = time.monotonic() + 1.8
    while time.monotonic() < deadline:
        assert sweeper.recover(max_attempts=2) == []  # alive the whole time
        time.sleep(0.1)
    thread.join()
    assert sweeper.get(job.job_id).status is JobStatus.succeeded


def test_a_duplicate_spawn_leaves_a_running_job_to_its_run(tmp_path):
    d = MemoryDict()
    alive = DictJobStore(d, lease_s=0.6)
    job = alive.create(new_job())
    alive.claim(job.job_id)
    worker = stub_worker(tmp_path, d, lease_s=0.6)
    started = time.monotonic()
    assert worker.run(job.job_id) == "running" and worker.service.runs == 0
    assert time.monotonic() - started < 0.3  # it does not wait for the lease: the sweep owns that


def test_a_run_that_died_is_requeued_by_the_sweep_and_spawned_again(tmp_path):
    d = MemoryDict()
    crashed = DictJobStore(d, lease_s=0.3)
    job = crashed.create(new_job())
    crashed.claim(job.job_id)  # ...and the container died: no heartbeat, no end
    worker = stub_worker(tmp_path, d, lease_s=0.3)
    assert worker.sweep()["recovered"] == 0  # leased still
    time.sleep(0.35)
    assert worker.sweep()["recovered"] == 1 and worker.spawned == [job.job_id]
    assert worker.run(job.job_id) == "succeeded"  # the spawn the sweep made
    assert worker.store.get(job.job_id).attempts == 2


def test_a_job_out_of_attempts_fails_with_a_reason_and_is_called_back(tmp_path):
    d = MemoryDict()
    crashed = DictJobStore(d, lease_s=0.3)
    job = crashed.create(new_job(webhook=True))
    worker = stub_worker(tmp_path, d, lease_s=0.3)  # JOB_MAX_ATTEMPTS=2
    for _ in range(2):  # two containers died running it
        crashed.claim(job.job_id)
        time.sleep(0.35)
        worker.sweep()
    assert worker.sweep() == {"recovered": 0, "failed": 0, "redispatched": 0, "webhooks": 0, "expired": 0, "clips": 0}
    failed = worker.store.get(job.job_id)
    assert failed.status is JobStatus.failed and failed.error.code == "interrupted"
    assert failed.webhook.state == "pending" and worker.service.runs == 0
    assert worker.spawned == [job.job_id, ("deliver", job.job_id)]  # requeued once, then called back


# --- deliver_webhook and sweep_jobs with .local() -------------------------------------------------------


def ended_job(store: DictJobStore, url: str):
    job = new_job(webhook=True)
    job = store.create(job.model_copy(update={"webhook": job.webhook.model_copy(update={"url": url})}))
    store.claim(job.job_id)
    store.finish(job.job_id, TRANSCRIPT)
    return store.get(job.job_id)


def test_deliver_webhook_sends_the_signed_event_with_retries(local_jobs):
    with WebhookReceiver(plan=[503, 500]) as receiver:
        job = ended_job(local_jobs.store, receiver.url)
        assert modal_app.deliver_webhook.local(job.job_id) == "delivered"
        requests = receiver.wait_for(3)
    verifier = ReferenceWebhook(WEBHOOK_SECRET)
    events = [verifier.verify(r["body"], r["headers"]) for r in requests]
    assert {r["headers"]["webhook-id"] for r in requests} == {job.webhook.id}
    assert events[-1]["type"] == "transcription.succeeded" and events[-1]["data"]["job_id"] == job.job_id
    attempts = local_jobs.store.deliveries(job.job_id)
    assert [(a.attempt, a.status_code, a.outcome) for a in attempts] == [
        (1, 503, "retry"), (2, 500, "retry"), (3, 200, "delivered"),
    ]  # fmt: skip
    assert modal_app.deliver_webhook.local(job.job_id) == "delivered" and len(receiver.requests) == 3  # not again


def test_a_deliverer_leaves_a_late_retry_to_the_sweep(local_jobs):
    local_jobs.deliver_budget_s = 0.0
    with WebhookReceiver(plan=[503]) as receiver:
        job = ended_job(local_jobs.store, receiver.url)
        assert modal_app.deliver_webhook.local(job.job_id) == "pending"
        assert len(receiver.requests) == 1
        spawned = []
        local_jobs.spawn_deliver = spawned.append
        assert modal_app.sweep_jobs.local()["webhooks"] == 0  # due in ~0.2 s, not overdue
        local_jobs.overdue_after_s = 0.0
        time.sleep(0.5)
        assert modal_app.sweep_jobs.local()["webhooks"] == 1 and spawned == [job.job_id]


def test_sweep_jobs_recovers_respawns_and_expires(deployment, monkeypatch):
    monkeypatch.setenv("JOB_RESULT_TTL_S", "500")
    local_jobs = deployment.build()  # rebuilt for the changed environment, over the same Dict
    assert local_jobs.settings.job_result_ttl_s == 500
    spawned = []
    local_jobs.spawn_run = spawned.append
    d = local_jobs.store.d
    past = DictJobStore(d, clock=lambda: time.time() - 1000, lease_s=S.job_lease_s)
    dead = past.create(new_job(created=time.time() - 1000))
    past.claim(dead.job_id)  # its lease lapsed 880 s ago
    lost = local_jobs.store.create(new_job(created=time.time() - S.job_redispatch_after_s - 5))
    fresh = local_jobs.store.create(new_job(created=time.time()))

    staged = local_jobs.clips.incoming_file()
    staged.write_bytes(b"x")
    info = ClipInfo(clip_id=new_clip_id(), size_bytes=1, duration=1.0, created_at=datetime.now(timezone.utc))
    clip = local_jobs.clips.add(staged, info)
    old = past.create(new_job(created=time.time() - 1000).model_copy(update={"clip_id": clip.clip_id, "owns_clip": True}))
    past.claim(old.job_id)
    past.fail(old.job_id, JobError(code="boom", message="it broke"))

    staged = local_jobs.clips.incoming_file()
    staged.write_bytes(b"y")
    long_ago = datetime.fromtimestamp(time.time() - local_jobs.settings.clip_ttl_s - 5, timezone.utc)
    stale = local_jobs.clips.add(staged, info.model_copy(update={"clip_id": new_clip_id(), "created_at": long_ago}))

    counts = modal_app.sweep_jobs.local()
    assert counts == {"recovered": 1, "failed": 0, "redispatched": 1, "webhooks": 0, "expired": 1, "clips": 1}
    with pytest.raises(Exception, match="no clip"):
        local_jobs.clips.get(stale.clip_id)  # uploaded with POST /api/audio past CLIP_TTL_S
    assert sorted(spawned) == sorted([dead.job_id, lost.job_id])
    assert local_jobs.store.get(dead.job_id).status is JobStatus.queued
    assert local_jobs.store.get(fresh.job_id).status is JobStatus.queued
    with pytest.raises(Exception, match="no clip"):
        local_jobs.clips.get(clip.clip_id)  # the expired job's upload went with it


# --- the real pipeline (models on CPU) ----------------------------------------------------------------


@pytest.mark.slow
def test_run_job_transcribes_the_clip_and_stores_the_result(local_jobs, tmp_path):
    staged = tmp_path / "talk.flac"
    staged.write_bytes(TWO_SPEAKERS.read_bytes())
    clip = local_jobs.service.add_clip(staged, filename="talk.flac", content_type="audio/flac")
    jobs = JobManager(local_jobs.settings, local_jobs.service, local_jobs.store, dispatch=lambda job: None)
    options = TranscribeOptions(speakers=SpeakerHints(num_speakers=2), word_timestamps=True)
    job = jobs.submit(clip, options, owns_clip=True)

    assert modal_app.run_job.local(job.job_id) == "succeeded"
    done = local_jobs.store.get(job.job_id)
    assert done.attempts == 1 and done.progress.done == done.progress.total == pytest.approx(28.04, abs=0.1)
    assert {s.speaker for s in done.result.segments} == {"SPEAKER_00", "SPEAKER_01"}
    assert done.result.language == "en" and all(s.words for s in done.result.segments)
    assert "country" in " ".join(s.text for s in done.result.segments).lower()
    assert modal_app.run_job.local(job.job_id) == "succeeded"  # a second spawn of it does nothing


@pytest.mark.slow
def test_the_web_endpoint_spawns_the_job_and_its_webhook(local_jobs):
    """POST /api/transcriptions on `web.local()`: the job goes to run_job through the spawn seam
    (LocalSpawn: .local() on a thread), then its webhook to deliver_webhook the same way."""
    with WebhookReceiver(plan=[503]) as receiver, TestClient(modal_app.web.local(), base_url="http://localhost") as client:
        assert client.app.state.jobs.runner is None  # no job threads in the web container
        with open(TWO_SPEAKERS, "rb") as f:
            params = {"webhook_url": receiver.url, "num_speakers": 2}
            r = client.post("/api/transcriptions", params=params, files={"file": ("talk.flac", f)})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert local_jobs.spawn_run.calls == [(accepted["job_id"],)]
        job, seen = wait_for_job(client, accepted["job_id"])
        assert job["status"] == "succeeded" and seen[-1] == "succeeded", job
        assert {s["speaker"] for s in job["result"]["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
        requests = receiver.wait_for(2)
        srt = client.get(job["links"]["result"], params={"format": "srt"})
        assert srt.status_code == 200 and srt.text.startswith("1\n")
    event = ReferenceWebhook(WEBHOOK_SECRET).verify(requests[-1]["body"], requests[-1]["headers"])
    assert event["type"] == "transcription.succeeded" and event["data"]["result"] == job["result"]
    assert local_jobs.spawn_deliver.calls == [(accepted["job_id"],)]
    deliveries = local_jobs.store.deliveries(accepted["job_id"])
    assert [(a.attempt, a.outcome) for a in deliveries] == [(1, "retry"), (2, "delivered")]


def test_without_a_webhook_secret_the_deliverer_records_why_and_stops(deployment, monkeypatch):
    monkeypatch.delenv("WEBHOOK_SECRET")
    worker = deployment.build()  # rebuilt without the secret, over the same Dict
    job = ended_job(worker.store, "https://example.com/hook")
    assert modal_app.deliver_webhook.local(job.job_id) == "failed"
    (attempt,) = worker.store.deliveries(job.job_id)
    assert attempt.outcome == "failed" and attempt.error == "not_signed"
    assert worker.store.due_webhooks(time.time() + 3600, 10) == []  # no retries; the job can expire
