"""API keys on a real uvicorn server on loopback (no models needed: refused requests never reach them)."""

from __future__ import annotations

import openai
import pytest
from jobs_support import ThreadedServer, assert_error
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.config import Settings

KEYS = "first-key, second-key"
ANY_ID = "0" * 32

PROTECTED = [
    ("GET", f"/api/audio/{ANY_ID}"),
    ("POST", "/api/audio"),
    ("DELETE", f"/api/audio/{ANY_ID}"),
    ("POST", f"/api/transcribe?clip_id={ANY_ID}"),
    ("POST", "/api/transcriptions"),
    ("GET", f"/api/jobs/{ANY_ID}"),
    ("DELETE", f"/api/jobs/{ANY_ID}"),
    ("GET", f"/api/jobs/{ANY_ID}/result"),
    ("GET", f"/api/jobs/{ANY_ID}/deliveries"),
    ("POST", f"/api/transcribe/stream?clip_id={ANY_ID}"),
    ("GET", "/api/no-such-route"),
    ("GET", "/v1/models"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("auth"), api_keys=KEYS)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize(
    "headers,message",
    [
        ({}, "required"),
        ({"X-API-Key": "wrong"}, "not valid"),
        ({"Authorization": "Bearer wrong"}, "not valid"),
        ({"Authorization": "Basic Zmlyc3Qta2V5Og=="}, "required"),
        ({"Authorization": "Bearer"}, "required"),
        ({"X-API-Key": "first-key-but-longer"}, "not valid"),
    ],
)
def test_missing_or_wrong_key_is_401(client, method, path, headers, message):
    r = client.request(method, path, headers=headers)
    error = assert_error(r, 401, "unauthorized")
    assert message in error["message"] and r.headers["www-authenticate"] == "Bearer"
    if path.startswith("/v1"):
        assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": "first-key"}, {"X-API-Key": "second-key"}, {"Authorization": "Bearer first-key"},
     {"Authorization": "bearer second-key"}],
)  # fmt: skip
def test_a_valid_key_passes(client, headers):
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert_error(client.get(f"/api/jobs/{ANY_ID}", headers=headers), 404, "job_not_found")


def test_health_and_docs_stay_open(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["paths"]["/api/transcriptions"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_an_upload_without_a_key_is_refused_before_its_body(client):
    r = client.post("/api/audio", files={"file": ("big.wav", b"\0" * (2 * 1024 * 1024))})
    assert_error(r, 401, "unauthorized")


def test_the_openai_sdk_sees_an_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert info.value.status_code == 401 and "not valid" in info.value.message
    models = openai.OpenAI(base_url=f"{server.url}/v1", api_key="second-key", max_retries=0).models.list()
    assert "whisper-1" in [m.id for m in models.data]


def test_no_keys_means_open(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        assert c.get("/v1/models").status_code == 200
        assert_error(c.get(f"/api/jobs/{ANY_ID}"), 404, "job_not_found")
