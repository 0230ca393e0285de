"""API keys on a real uvicorn server on loopback (no models needed: refused requests never reach them)."""

from __future__ import annotations

import openai
import pytest
from jobs_support import ThreadedServer, assert_error
from live_server import live_server
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.api.auth import ConfigurationError, parse_api_keys
from shared.core.config import Settings

FIRST, SECOND = "first-key-0123456789", "second-key-0123456789"  # keys need 16 characters
KEYS = f"{FIRST}, {SECOND}"
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
    ("GET", "/metrics"),
    ("GET", "/api/workers"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("auth"), api_keys=KEYS,
                        auth_failures_per_min=100_000)  # the many wrong keys below are not throttled here
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
        ({"X-API-Key": FIRST + "-but-longer"}, "not valid"),
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
    [{"X-API-Key": FIRST}, {"X-API-Key": SECOND}, {"Authorization": f"Bearer {FIRST}"},
     {"Authorization": f"bearer {SECOND}"}],
)  # fmt: skip
def test_a_valid_key_passes(client, headers):
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert_error(client.get(f"/api/jobs/{ANY_ID}", headers=headers), 404, "job_not_found")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong", "X-API-Key": FIRST},
        {"Authorization": f"Bearer {FIRST}", "X-API-Key": SECOND},
        {"Authorization": "Basic Zmlyc3Qta2V5Og==", "X-API-Key": FIRST},
        {"Authorization": "garbage", "X-API-Key": FIRST},
    ],
)
def test_two_credentials_must_agree(client, headers):
    """A wrong credential is not excused by a right one in the other header."""
    assert "not valid" in assert_error(client.get("/v1/models", headers=headers), 401, "unauthorized")["message"]
    agreeing = {"Authorization": f"Bearer {FIRST}", "X-API-Key": FIRST}
    assert client.get("/v1/models", headers=agreeing).status_code == 200


def test_health_and_docs_stay_open(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["paths"]["/api/transcriptions"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    tickets = spec["paths"]["/api/live/tickets"]["post"]  # a browser's way to open a live WebSocket
    assert tickets["security"] == [{"bearer": []}, {"apiKey": []}] and {"401", "429"} <= set(tickets["responses"])
    assert spec["components"]["schemas"]["LiveTicket"]["required"] == ["ticket", "expires_in"]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_an_upload_without_a_key_is_refused_before_its_body(client):
    r = client.post("/api/audio", files={"file": ("big.wav", b"\0" * (2 * 1024 * 1024))})
    assert_error(r, 401, "unauthorized")


def test_the_openai_sdk_sees_an_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert info.value.status_code == 401 and "not valid" in info.value.message
    models = openai.OpenAI(base_url=f"{server.url}/v1", api_key=SECOND, max_retries=0).models.list()
    assert "whisper-1" in [m.id for m in models.data]


def test_no_keys_means_open(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        assert c.get("/v1/models").status_code == 200
        assert_error(c.get(f"/api/jobs/{ANY_ID}"), 404, "job_not_found")


def test_a_valid_key_opens_metrics(client):
    assert client.get("/metrics", headers={"X-API-Key": FIRST}).status_code == 200


def test_api_keys_are_a_secret_setting():
    settings = Settings(_env_file=None, api_keys=KEYS)
    assert FIRST not in repr(settings) and FIRST not in str(settings.model_dump())
    assert parse_api_keys(settings.api_keys) == {FIRST, SECOND}


# --- fails closed ---
@pytest.mark.parametrize("keys", ["", " , ,"])
def test_required_keys_refuse_to_start_when_empty(tmp_path, keys):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=keys, require_api_keys=True)
    with pytest.raises(ConfigurationError, match="REQUIRE_API_KEYS is on but API_KEYS is empty"):
        create_app(settings, runner=NoModels())


@pytest.mark.parametrize("keys", ["good-key-0123456789, bad key", "good-key-0123456789,caf\u00e9",
                                  "tab\tkey-0123456789"])
def test_unparsable_keys_refuse_to_start(tmp_path, keys):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=keys)
    with pytest.raises(ConfigurationError, match="API_KEYS: key") as info:
        create_app(settings, runner=NoModels())
    assert "good-key" not in str(info.value)  # the message never shows a key


def test_the_server_process_exits_with_the_reason(tmp_path):
    """`python -m shared.api` with REQUIRE_API_KEYS and no keys stops before it serves anything."""
    with pytest.raises(RuntimeError, match="server exited") as info:
        with live_server(tmp_path, env={"REQUIRE_API_KEYS": "true", "API_KEYS": ""}, startup_timeout=60):
            pass
    assert "server exited with 2" in str(info.value) and "Traceback" not in str(info.value)
    assert "not starting: REQUIRE_API_KEYS is on but API_KEYS is empty" in str(info.value)


def test_required_keys_serve_when_given(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=FIRST, require_api_keys=True)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        assert_error(c.get("/v1/models"), 401, "unauthorized")
        assert c.get("/v1/models", headers={"X-API-Key": FIRST}).status_code == 200


@pytest.mark.parametrize("keys", [f"{FIRST},short-key", "fifteen-chars-k", f"{FIRST}, x"])
def test_short_keys_refuse_to_start(tmp_path, keys):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=keys)
    with pytest.raises(ConfigurationError, match="fewer than 16: a short key can be guessed") as info:
        create_app(settings, runner=NoModels())
    assert "short-key" not in str(info.value) and "fifteen" not in str(info.value)


def test_a_key_in_the_url_is_refused_and_says_what_to_do(client):
    """URLs are logged: a key there is refused, even a right one, and the message names the ways that work."""
    for path in [f"/api/jobs/{ANY_ID}?api_key={FIRST}", f"/v1/models?api_key={FIRST}", "/v1/models?api_key="]:
        error = assert_error(client.get(path, headers={"X-API-Key": FIRST}), 401, "unauthorized")
        for hint in ("not accepted in URLs", "X-API-Key", "POST /api/live/tickets", "openai-insecure-api-key."):
            assert hint in error["message"], (hint, error["message"])


# --- wrong keys are throttled per address; right ones always pass ---
def test_wrong_keys_are_throttled_per_address(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=KEYS, auth_failures_per_min=3)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        for guess in ("a", "b", "c"):
            assert_error(c.get("/v1/models", headers={"X-API-Key": guess}), 401, "unauthorized")
        throttled = c.get(f"/api/jobs/{ANY_ID}", headers={"Authorization": "Bearer d"})
        error = assert_error(throttled, 429, "too_many_auth_failures")
        assert 1 <= int(throttled.headers["retry-after"]) <= 60 and "failed API key attempts" in error["message"]
        assert assert_error(c.get("/v1/models", headers={"X-API-Key": "x"}), 429)["type"] == "invalid_request_error"
        # while the address is throttled, a right key still passes: everyone behind one proxy shares the
        # address, and a guesser among them must not lock them out
        assert c.get("/v1/models", headers={"X-API-Key": FIRST}).status_code == 200
        assert_error(c.get(f"/api/jobs/{ANY_ID}", headers={"Authorization": f"Bearer {SECOND}"}), 404, "job_not_found")
        assert_error(c.get("/v1/models"), 401, "unauthorized")  # no key at all: not an attempt
        assert c.get("/healthz").status_code == 200


def test_right_keys_do_not_count_as_failures(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=KEYS, auth_failures_per_min=2)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        for _ in range(5):
            assert c.get("/v1/models", headers={"X-API-Key": FIRST}).status_code == 200
        assert_error(c.get("/v1/models", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert c.get("/v1/models", headers={"X-API-Key": SECOND}).status_code == 200
