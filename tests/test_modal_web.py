"""The Modal web endpoint passes the same API tests as the local server.

The app under test is the one the `web` asgi function returns (`web.local()`), with the Modal runner;
its stage calls go through `LocalCalls` (functions/local.py), which calls the deployed classes' methods
with `.local()` instead of `.remote()`/`.map()`. It is served by uvicorn on loopback
(tests/modal_local_serve.py), and tests/test_api.py's tests run against it unchanged: they are
imported here, and the `server` fixture they use is this module's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_api
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS
from fastapi.testclient import TestClient
from live_server import live_server
from modal_doubles import LocalDeployment

from functions import app as modal_app
from functions.local import LocalCalls
from functions.modal_runner import CHUNK_TARGET, ModalRunner

# The same API tests as the local server (fixtures `client` and `clip_id` included).
from test_api import *  # noqa: F401,F403
from test_api import assert_error, upload

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")]

TESTS = Path(__file__).resolve().parent
MODAL_SERVER = {"module": "modal_local_serve", "env": {"PYTHONPATH": str(TESTS)}}


def modal_live_server(storage, env=None, **kwargs):
    return live_server(storage, env={**MODAL_SERVER["env"], **(env or {})}, module=MODAL_SERVER["module"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Overrides conftest's `server` for the imported API tests: the Modal web endpoint's app."""
    with modal_live_server(tmp_path_factory.mktemp("modal-server")) as s:
        yield s


def test_upload_over_the_limit_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):  # noqa: F811
    """test_api's own version starts a second server; here that server is the Modal one too."""
    monkeypatch.setattr(test_api, "live_server", modal_live_server)
    test_api.test_upload_over_the_limit_is_refused_and_nothing_is_kept(tmp_path)


def test_the_server_under_test_is_the_modal_endpoint(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["whisper_model"] == "tiny.en"


# --- in-process: the app object itself ------------------------------------------------------------------


@pytest.fixture
def modal_app_client(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_STORAGE_PATH", str(tmp_path))
    local = LocalDeployment()
    local.build()
    app = modal_app.web.local()
    with TestClient(app, base_url="http://localhost") as c:  # served without keys: a loopback host name
        yield c
    local.close()


def test_web_local_returns_the_shared_fastapi_app_with_the_modal_runner(modal_app_client):
    service = modal_app_client.app.state.service
    assert isinstance(service.runner, ModalRunner)
    assert isinstance(service.runner.calls, LocalCalls)
    from shared.pipeline.stages import Stage

    # every stage (and the batched chunk path) reaches a method of the deployed classes
    assert set(service.runner.calls.targets) == {s.value for s in Stage} | {CHUNK_TARGET}
    paths = set(modal_app_client.get("/openapi.json").json()["paths"])
    assert {"/api/audio", "/api/transcribe", "/healthz"} <= paths


def test_a_short_clip_goes_through_the_dynamically_batched_class(modal_app_client):
    """A 22 s clip is one partial batch: its chunks take the @modal.batched path."""
    calls = modal_app_client.app.state.service.runner.calls
    seen = []
    original = calls.map

    def recording_map(target, inputs, kwargs):
        seen.append((target, len(inputs)))
        return original(target, inputs, kwargs)

    calls.map = recording_map
    clip_id = upload(modal_app_client, ONE_SPEAKER).json()["clip_id"]
    r = modal_app_client.post("/api/transcribe", params={"clip_id": clip_id, "diarize": False, "format": "txt"})
    assert r.status_code == 200, r.text
    assert "sister" in r.text.lower() or len(r.text.split()) > 20, r.text
    assert seen and seen[0][0] == CHUNK_TARGET


def test_errors_keep_the_one_json_shape(modal_app_client):
    assert_error(modal_app_client.post("/api/transcribe", params={"clip_id": "0" * 32}), 404, "clip_not_found")
    assert_error(modal_app_client.post("/api/audio", files={"file": ("a.wav", b"")}), 400, "empty_file")
    clip_id = upload(modal_app_client, TWO_SPEAKERS).json()["clip_id"]
    assert_error(
        modal_app_client.post("/api/transcribe", params={"clip_id": clip_id, "language": "de"}), 422, "unsupported_language"
    )


@pytest.mark.slow
def test_live_stream_through_the_modal_endpoint(server):
    """/ws/stream on the Modal app: partials, finals and voices from the deployed classes' methods."""
    import asyncio

    import numpy as np
    from audio_fixtures import load_audio, load_reference
    from scoring import wer

    from shared.live.client import StreamClient

    pcm = (np.clip(load_audio(TWO_SPEAKERS), -1, 1) * 32767).astype("<i2").tobytes()
    run = asyncio.run(StreamClient(server.url.replace("http", "ws") + "/ws/stream", speed=0).run(pcm))
    assert wer(load_reference(TWO_SPEAKERS)["text"], run.transcript()) < 0.25
    assert len({f["speaker"] for f in run.finals}) == 2
