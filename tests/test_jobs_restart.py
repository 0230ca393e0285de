"""A job accepted is never lost: SIGKILL the real server while a job runs, start it again on the same
storage, and the job runs to the end once the dead server's lease lapsed (or, once it used its attempts,
fails with a reason); the upload is still there and the webhook still arrives, signed."""

from __future__ import annotations

import pytest
from audio_fixtures import TWO_SPEAKERS
from jobs_support import WEBHOOK_SECRET, WebhookReceiver, wait_for_job
from live_server import live_server
from standardwebhooks import Webhook as ReferenceWebhook

pytestmark = pytest.mark.slow

ENV = {
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "WEBHOOK_ALLOW_PRIVATE": "true",
    "WEBHOOK_BACKOFF_S": "0.2",
    "JOB_MAX_ATTEMPTS": "2",
    "JOB_LEASE_S": "2",  # the restarted server waits this long for the dead one's lease
}


def submit_and_kill_while_running(server, webhook_url: str) -> dict:
    with server.client() as c, open(TWO_SPEAKERS, "rb") as f:
        params = {"webhook_url": webhook_url, "num_speakers": 2}
        job = c.post("/api/transcriptions", params=params, files={"file": f}).json()
        running, _ = wait_for_job(c, job["job_id"], statuses=("running", "succeeded", "failed"))
    assert running["status"] == "running", running
    server.kill()
    return running


def test_jobs_survive_sigkill(tmp_path):
    storage = tmp_path / "storage"
    verifier = ReferenceWebhook(WEBHOOK_SECRET)
    with WebhookReceiver() as receiver:
        with live_server(storage, ENV) as first:
            job = submit_and_kill_while_running(first, receiver.url)
        clip_files = sorted(p.name for p in (storage / "clips").glob(f"{job['clip_id']}.*"))
        assert clip_files == [f"{job['clip_id']}.{ext}" for ext in ("audio", "json", "pcm")]  # upload, meta, decode

        with live_server(storage, ENV) as second:
            with second.client() as c:
                done, _ = wait_for_job(c, job["job_id"])
                assert done["status"] == "succeeded" and done["attempts"] == 2, done
                assert {s["speaker"] for s in done["result"]["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
                assert c.get(f"/api/audio/{job['clip_id']}").status_code == 200
                (request,) = receiver.wait_for(1)
                event = verifier.verify(request["body"], request["headers"])
                assert event["type"] == "transcription.succeeded" and event["data"]["job_id"] == job["job_id"]
            interrupted = submit_and_kill_while_running(second, receiver.url)

        # one attempt allowed: the interrupted job is failed once its lease lapsed, with the reason
        with live_server(storage, ENV | {"JOB_MAX_ATTEMPTS": "1"}) as third, third.client() as c:
            failed, _ = wait_for_job(c, interrupted["job_id"], timeout=60)  # failed once the lease lapsed
            assert failed["status"] == "failed" and failed["error"]["code"] == "interrupted", failed
            assert "server stopped while the job ran" in failed["error"]["message"]
            assert c.get(f"/api/audio/{interrupted['clip_id']}").status_code == 200
            requests = receiver.wait_for(2)
            event = verifier.verify(requests[1]["body"], requests[1]["headers"])
            assert event["type"] == "transcription.failed" and event["data"]["error"] == failed["error"]
            assert c.get(f"/api/jobs/{interrupted['job_id']}/deliveries").json()["webhook"]["state"] == "delivered"
