"""The OpenAPI document tells the truth: every operation lists its error responses in the error
schema, 405s carry the right Allow header, and a bounded schemathesis run over the whole document
(every check but positive_data_acceptance, which cannot know that the bytes it sends must be audio)
finds nothing. A real server on loopback with the real models (tiny.en, CPU); the generated requests
almost never hold decodable audio, so they stay fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jobs_support import WEBHOOK_SECRET, ThreadedServer, assert_error

from shared.api.app import create_app
from shared.core.config import Settings

KEY = "schema-test-key-0123456789"
ANY_ID = "0" * 32
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(scope="module")
def server(tmp_path_factory, runner):
    settings = Settings(
        _env_file=None,
        audio_storage_path=tmp_path_factory.mktemp("openapi"),
        api_keys=KEY,
        auth_failures_per_min=0,  # the run sends wrong keys on purpose
        webhook_secret=WEBHOOK_SECRET,
        max_upload_mb=1,
        job_wait_max_s=2,
    )
    with ThreadedServer(create_app(settings, runner=runner)) as s:
        yield s


@pytest.fixture(scope="module")
def spec(server):
    with server.client() as c:
        return c.get("/openapi.json").json()


def test_every_operation_documents_its_errors(spec):
    assert "ErrorResponse" in spec["components"]["schemas"] and "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {int(s) for s in operation["responses"] if s[0] in "45"}
            assert 500 in {int(s) for s in operation["responses"]}, (method, path)
            for status in errors:
                content = operation["responses"][str(status)]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            if path.startswith(("/api", "/v1")):
                assert {401, 429} <= errors, (method, path)
                assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True
            if "{" in path:
                assert 404 in errors, (method, path)
            if "requestBody" in operation:
                assert {400, 413, 422} <= errors, (method, path)
    uploads = [("post", "/api/audio"), ("post", "/api/transcriptions"), ("post", "/v1/audio/transcriptions")]
    assert all("415" in spec["paths"][p][m]["responses"] for m, p in uploads)
    assert "409" in spec["paths"]["/api/jobs/{job_id}"]["delete"]["responses"]


def test_options_are_documented_as_form_fields_too(spec):
    for path in ("/api/transcribe", "/api/transcriptions", "/api/transcribe/stream"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        query = {p["name"] for p in spec["paths"][path]["post"]["parameters"] if p["in"] == "query"}
        assert {"diarize", "num_speakers", "language", "word_timestamps"} <= set(body) & query, path
    assert "format" in spec["paths"]["/api/transcribe"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("PUT", f"/api/audio/{ANY_ID}", "GET, DELETE"),
        ("POST", f"/api/jobs/{ANY_ID}", "GET, DELETE"),
        ("GET", "/api/audio", "POST"),
        ("OPTIONS", "/api/transcriptions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_names_every_method_of_the_path(server, method, path, allow):
    with server.client(headers={"X-API-Key": KEY}) as c:
        r = c.request(method, path)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


@pytest.mark.slow
def test_schemathesis_finds_nothing(server, tmp_path):
    """Bounded: a handful of examples per operation, two workers (about a minute on two cores)."""
    command = [
        str(SCHEMATHESIS), "run", f"{server.url}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "8"),
        "--workers", "2", "--request-timeout", "30", "--seed", "12",
        "-H", f"X-API-Key: {KEY}", "-H", f"Authorization: Bearer {KEY}", "--no-color", "--suppress-health-check", "all",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-15000:] + run.stderr[-3000:]
    print(run.stdout[-6000:])
    assert "Operations:" in run.stdout and "generated" in run.stdout  # it ran, over the whole document
