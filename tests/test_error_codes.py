"""One registry of HTTP error codes (shared/core/errors.py CODES): every code the app can answer with is
in it, with the status it is sent with, and the OpenAPI document lists exactly its codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import functions.volume_clips  # noqa: F401 - defines a ServiceError of its own
import shared.api.app  # noqa: F401 - imports every route module, so every ServiceError subclass
from shared.api.app import create_app
from shared.core.config import Settings
from shared.core.errors import CODES, HTTP_CODES, ServiceError

ROOT = Path(__file__).resolve().parents[1]
WEBSOCKET_PROTOCOLS = {"live_ws.py", "realtime.py", "realtime_config.py"}  # their own error events


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_service_error_is_registered_with_its_status():
    classes = list(_subclasses(ServiceError))
    assert len(classes) >= 17
    for cls in [ServiceError, *classes]:
        assert cls.code in CODES, cls
        assert cls.status == CODES[cls.code].status, cls


def test_a_class_with_an_unregistered_code_or_status_fails_at_import():
    with pytest.raises(TypeError, match="not in shared.core.errors.CODES"):
        type("Made", (ServiceError,), {"code": "made_up_code"})
    with pytest.raises(TypeError, match="contradicts"):
        type("Made", (ServiceError,), {"code": "job_not_found", "status": 400})


def _sources():
    for folder in ("shared", "functions"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name not in WEBSOCKET_PROTOCOLS and "live" not in path.parts:
                yield path, path.read_text()


CALL_SITES = [
    re.compile(r'\berror_response\(\s*(\d+),\s*"(\w+)"'),  # error_response(429, "rate_limited", ...)
    re.compile(r'\b_refuse\([^)]*?(\d+),\s*"(\w+)"'),  # the auth middleware's refusals
]


def test_every_code_written_at_a_call_site_is_registered():
    seen = set()
    for path, text in _sources():
        for pattern in CALL_SITES:
            for status, code in pattern.findall(text):
                assert CODES.get(code) and CODES[code].status == int(status), (path, code, status)
                seen.add(code)
        for code in re.findall(r'\bcode="(\w+)"', text):  # ServiceError(..., code="...")
            assert code in CODES, (path, code)
            seen.add(code)
    assert {"rate_limited", "unauthorized", "too_many_auth_failures", "internal_error", "job_finished"} <= seen


def test_generic_codes_are_one_per_status():
    generic = [e for e in CODES.values() if e.generic]
    assert len({e.status for e in generic}) == len(generic)
    assert all(CODES[code].status == status for status, code in HTTP_CODES.items())


def test_the_openapi_document_lists_the_registry(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys="k" * 20, rate_limit_per_min=60)
    with TestClient(create_app(settings)) as client:
        schema = client.get("/openapi.json", headers={"x-api-key": "k" * 20}).json()
    code = schema["components"]["schemas"]["ErrorResponse"]["properties"]["error"]["properties"]["code"]
    assert code["enum"] == sorted(CODES)
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    listed = set(re.findall(r"\(([^()]*)\)$", response["description"])[0].split(", "))
                    assert listed == {e.code for e in CODES.values() if e.status == int(status)}, status
