"""Hostile callers against owners, quotas and retention, on a real uvicorn server on loopback with two API
keys (no models: every refusal here comes before them, and a job on them fails at once, which is all
these tests need of a job).

Key B tries everything on key A's clip and job: read, delete, transcribe (plain and streamed), submit a
job on it, read, cancel, fetch the result of and list the deliveries of A's job. Each is answered 404
with the same code and words as a missing id (ids cannot be probed), and A's clip and job are untouched.
Then the storage quota (413 storage_quota_exceeded, nothing kept) and CLIP_TTL_S (the clip is gone from
the API and from the disk)."""

from __future__ import annotations

import time

import pytest
from jobs_support import ThreadedServer, assert_error, short_clip
from starlette.requests import Request
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.api.auth import IDENTITY
from shared.api.clips import owner
from shared.core.config import Settings

KEY_A = "owner-a-0123456789abcdefghijklmnopqrstuv"
KEY_B = "owner-b-0123456789abcdefghijklmnopqrstuv"
MISSING = "0" * 32


def serve(tmp_path, **settings):
    config = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=f"{KEY_A},{KEY_B}", **settings)
    return ThreadedServer(create_app(config, runner=NoModels()))


def as_key(server, key):
    return server.client(headers={"X-API-Key": key})


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return short_clip(tmp_path_factory.mktemp("audio") / "short.wav", seconds=4.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("owners")) as s:
        yield s


def upload(client, wav) -> dict:
    with open(wav, "rb") as f:
        r = client.post("/api/audio", files={"file": ("a.wav", f)})
    assert r.status_code == 201, r.text
    return r.json()


def test_another_key_cannot_touch_a_clip_or_a_job(server, wav):
    with as_key(server, KEY_A) as a, as_key(server, KEY_B) as b:
        clip = upload(a, wav)
        assert "owner" not in clip and "job_id" not in clip and "pcm_format" not in clip
        with open(wav, "rb") as f:
            job = a.post("/api/transcriptions", params={"wait": True}, files={"file": f}).json()
        assert job["status"] == "failed" and "owner" not in job  # no models here; it is A's job all the same
        clip_id, job_id = clip["clip_id"], job["job_id"]

        def missing_clip(r, which=clip_id):
            assert assert_error(r, 404, "clip_not_found")["message"] == f"no clip with id {which}"

        def missing_job(r):
            assert assert_error(r, 404, "job_not_found")["message"] == f"no job with id {job_id}"

        missing_clip(b.get(f"/api/audio/{clip_id}"))
        missing_clip(b.delete(f"/api/audio/{clip_id}"))
        missing_clip(b.post("/api/transcribe", params={"clip_id": clip_id}))
        missing_clip(b.post("/api/transcribe/stream", params={"clip_id": clip_id}))
        missing_clip(b.post("/api/transcriptions", params={"clip_id": clip_id}))
        missing_clip(b.get(f"/api/audio/{job['clip_id']}"), job["clip_id"])  # the clip uploaded with A's job is A's too
        missing_job(b.get(f"/api/jobs/{job_id}"))
        missing_job(b.delete(f"/api/jobs/{job_id}"))
        missing_job(b.get(f"/api/jobs/{job_id}/result"))
        missing_job(b.get(f"/api/jobs/{job_id}/deliveries"))
        # the same answer as for an id nobody has
        assert_error(b.get(f"/api/audio/{MISSING}"), 404, "clip_not_found")
        assert_error(b.get(f"/api/jobs/{MISSING}"), 404, "job_not_found")

        # A still has all of it
        assert a.get(f"/api/audio/{clip_id}").json()["clip_id"] == clip_id
        assert a.get(f"/api/audio/{job['clip_id']}").status_code == 200
        assert a.get(f"/api/jobs/{job_id}").json()["status"] == "failed"
        assert a.get(f"/api/jobs/{job_id}/deliveries").status_code == 200
        assert_error(a.delete(f"/api/jobs/{job_id}"), 409, "job_finished")  # A's own: the state answers
        streamed = a.post("/api/transcribe/stream", params={"clip_id": clip_id})  # found: it starts (and fails here)
        assert streamed.status_code == 200 and '"type":"start"' in streamed.text.splitlines()[0]
        assert a.delete(f"/api/audio/{clip_id}").status_code == 200
        assert b.get("/healthz").json()["status"] == "ok"


def test_the_storage_quota_refuses_an_upload_and_keeps_nothing(tmp_path, wav):
    # a 4 s 16 kHz WAV is ~128 KB, and ~128 KB more as its int16 PCM copy: two fit in 0.6 MB, not three
    with serve(tmp_path, storage_quota_mb=0.6) as s, as_key(s, KEY_A) as a, as_key(s, KEY_B) as b:
        first, _second = upload(a, wav), upload(a, wav)
        with open(wav, "rb") as f:
            r = a.post("/api/audio", files={"file": ("a.wav", f)})
        error = assert_error(r, 413, "storage_quota_exceeded")
        assert "STORAGE_QUOTA_MB" in error["message"] and "MB" in error["message"]
        with open(wav, "rb") as f:  # a job's upload counts too: refused, and no job is made
            assert_error(a.post("/api/transcriptions", files={"file": f}), 413, "storage_quota_exceeded")
        assert len(list((tmp_path / "clips").glob("*.json"))) == 2
        assert list((tmp_path / "incoming").iterdir()) == []
        upload(b, wav)  # a quota per key: B has its own
        assert a.delete(f"/api/audio/{first['clip_id']}").status_code == 200
        upload(a, wav)  # room again
        assert a.get("/healthz").json()["status"] == "ok"


def test_clips_expire_after_clip_ttl_s(tmp_path, wav):
    with serve(tmp_path, clip_ttl_s=1.0) as s, as_key(s, KEY_A) as a:
        clip = upload(a, wav)
        assert a.get(f"/api/audio/{clip['clip_id']}").status_code == 200
        deadline = time.monotonic() + 15
        while list((tmp_path / "clips").glob(f"{clip['clip_id']}.*")):  # the janitor sweeps a few times a TTL
            assert time.monotonic() < deadline, "the expired clip is still on disk"
            time.sleep(0.1)
        assert_error(a.get(f"/api/audio/{clip['clip_id']}"), 404, "clip_not_found")
        assert_error(a.post("/api/transcriptions", params={"clip_id": clip["clip_id"]}), 404, "clip_not_found")
        assert a.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(
    "identity,expected",
    [("key:0123456789abcdef", "key:0123456789abcdef"), ("addr:10.0.0.7", ""), ("addr:127.0.0.1", ""), (None, "")],
)
def test_an_address_is_never_an_owner(identity, expected):
    """Without keys everyone is the one local user: a client's address (a laptop's changes) owns nothing."""
    scope = {"type": "http", "headers": []}
    if identity:
        scope[IDENTITY] = identity
    assert owner(Request(scope)) == expected
