"""Single-step jobs on the real service (real models, a real server on loopback): submit, poll, wait,
cancel, and the signed webhook arriving at a receiver that fails its first attempts."""

from __future__ import annotations

import time

import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_reference
from jobs_support import WEBHOOK_SECRET, WebhookReceiver, assert_error, keyed_client, keyed_server, wait_for_job
from scoring import wer
from standardwebhooks import Webhook as ReferenceWebhook

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    return keyed_server()


@pytest.fixture(scope="module")
def client(server):
    with keyed_client(server) as c:
        yield c


def test_submit_a_file_poll_it_and_get_the_signed_webhook(client):
    with WebhookReceiver(plan=[503, 500, 429]) as receiver:
        with open(TWO_SPEAKERS, "rb") as f:
            params = {"webhook_url": receiver.url, "num_speakers": 2}
            r = client.post("/api/transcriptions", params=params, files={"file": ("talk.flac", f)})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "queued" and accepted["links"]["self"] == f"/api/jobs/{accepted['job_id']}"
        assert accepted["webhook"]["url"] == receiver.url and accepted["webhook"]["state"] is None

        job, seen = wait_for_job(client, accepted["job_id"])
        assert job["status"] == "succeeded", job
        assert seen[-2:] == ["running", "succeeded"]
        assert job["attempts"] == 1 and job["progress"] == {"done": pytest.approx(28.04, abs=0.1), "total": pytest.approx(28.04, abs=0.1)}
        result = job["result"]
        assert {s["speaker"] for s in result["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
        assert wer(load_reference(TWO_SPEAKERS)["text"], " ".join(s["text"] for s in result["segments"])) < 0.2

        requests = receiver.wait_for(4)
        time.sleep(0.3)
        assert len(receiver.requests) == 4  # accepted on the 4th attempt, and not sent again

    ids = {r["headers"]["webhook-id"] for r in requests}
    assert ids == {job["webhook"]["id"]}  # one id on every attempt: receivers de-duplicate on it
    verifier = ReferenceWebhook(WEBHOOK_SECRET)  # an independent Standard Webhooks implementation
    events = [verifier.verify(r["body"], r["headers"]) for r in requests]
    event = events[-1]
    assert event["type"] == "transcription.succeeded" and event["data"]["job_id"] == job["job_id"]
    assert event["data"]["result"] == result and event["data"]["status"] == "succeeded"

    deliveries = client.get(job["links"]["deliveries"]).json()
    assert deliveries["webhook"]["state"] == "delivered"
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in deliveries["attempts"]] == [
        (1, 503, "retry"), (2, 500, "retry"), (3, 429, "retry"), (4, 200, "delivered"),
    ]  # fmt: skip
    times = [a["at"] for a in deliveries["attempts"]]
    assert times == sorted(times)

    clip = client.get(job["links"]["clip"])
    assert clip.status_code == 200 and clip.json()["filename"] == "talk.flac"


def test_wait_true_answers_with_the_result(client):
    with open(ONE_SPEAKER, "rb") as f:
        clip_id = client.post("/api/audio", files={"file": f}).json()["clip_id"]
    r = client.post("/api/transcriptions", params={"clip_id": clip_id, "wait": True, "diarize": False, "format": "srt"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "succeeded" and job["clip_id"] == clip_id and not job["owns_clip"]
    assert all(s["speaker"] is None for s in job["result"]["segments"])

    srt = client.get(job["links"]["result"])  # in the format the job was submitted with
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:00")
    txt = client.get(job["links"]["result"], params={"format": "txt"})
    assert txt.headers["content-type"].startswith("text/plain") and "Dashwood" in txt.text
    as_json = client.get(job["links"]["result"], params={"format": "json"}).json()
    assert as_json["segments"] == job["result"]["segments"]


def test_cancel_a_queued_and_a_running_job(client):
    with open(TWO_SPEAKERS, "rb") as f:
        clip_id = client.post("/api/audio", files={"file": f}).json()["clip_id"]
    first = client.post("/api/transcriptions", params={"clip_id": clip_id}).json()
    second = client.post("/api/transcriptions", params={"clip_id": clip_id}).json()
    wait_for_job(client, first["job_id"], statuses=("running",))
    assert client.get(second["links"]["self"]).json()["status"] == "queued"  # one worker: it waits

    assert client.delete(second["links"]["self"]).json()["status"] == "cancelled"
    cancelled = client.delete(first["links"]["self"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_error(client.delete(first["links"]["self"]), 409, "job_finished")
    assert_error(client.get(first["links"]["result"]), 409, "job_not_finished")

    # the worker notices at its next progress report and takes the next job; nothing overwrites the cancel
    with open(ONE_SPEAKER, "rb") as f:
        third = client.post("/api/transcriptions", params={"diarize": False}, files={"file": f}).json()
    assert wait_for_job(client, third["job_id"])[0]["status"] == "succeeded"
    for job in (first, second):
        after = client.get(job["links"]["self"]).json()
        assert after["status"] == "cancelled" and after["result"] is None
    assert client.get(second["links"]["self"]).json()["attempts"] == 0  # never started
