"""An honest OpenAPI document: every operation lists the error responses it can give, in the one error
shape ({"error": {"code", "message"}}), with the headers they carry (401 WWW-Authenticate, 429
Retry-After); routes that take options document them as form fields too (shared/api/params.py).

Checked by a bounded schemathesis run over the whole document (tests/test_openapi_schemathesis.py).
"""

from __future__ import annotations

from fastapi import FastAPI

from shared.api.auth import PROTECTED
from shared.api.params import FormatParams, TranscribeParams, form_body_schema
from shared.core.config import Settings
from shared.core.domain import ID_PATTERN
from shared.core.errors import HTTP_ERRORS

ERROR_SCHEMA = "ErrorResponse"
ERROR_COMPONENT = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": sorted(HTTP_ERRORS),
                    "description": "stable, machine-readable: "
                    + "; ".join(f"{e.code} ({e.status or 'any'}): {e.description}" for e in HTTP_ERRORS.values()),
                },
                "message": {"type": "string", "description": "for people"},
                "type": {"type": "string", "description": "/v1 only: OpenAI's error type"},
                "param": {"type": ["string", "null"], "description": "/v1 only: the parameter at fault"},
            },
        }
    },
}

SUMMARIES = {
    400: "Bad request: a malformed id, an empty file or an unreadable form body",
    401: "An API key is required, or the one sent is not valid",
    403: "A page of another origin may not send this; or, for the webhook secret, it is the operator's",
    404: "No such clip, job, voice or model",
    409: "The job is not in a state that allows this, or the voice's name or count is taken",
    413: "The body exceeds MAX_UPLOAD_MB, or the audio MAX_AUDIO_S",
    415: "The file is not decodable audio",
    422: "A parameter or form field is invalid, unknown, or given twice with different values",
    429: "Too many requests, or too many failed API keys from this address",
    500: "A bug on our side (logged); the server keeps serving",
}
# each status's summary and the registry's codes of that status
DESCRIPTIONS = {
    status: f"{summary} ({', '.join(e.code for e in HTTP_ERRORS.values() if e.status == status)})"
    for status, summary in SUMMARIES.items()
}

# What each operation can answer beyond the rules in `error_statuses`
EXTRA: dict[tuple[str, str], set[int]] = {
    ("post", "/api/audio"): {415},
    ("get", "/api/audio/{clip_id}"): {400, 404},
    ("delete", "/api/audio/{clip_id}"): {400, 404},
    ("post", "/api/transcribe"): {400, 404},
    ("post", "/api/transcribe/stream"): {400, 404},
    ("post", "/api/transcriptions"): {400, 404, 415},
    ("get", "/api/jobs/{job_id}"): {400, 404},
    ("delete", "/api/jobs/{job_id}"): {400, 404, 409},
    ("get", "/api/jobs/{job_id}/result"): {400, 404, 409},
    ("get", "/api/jobs/{job_id}/deliveries"): {400, 404},
    ("post", "/v1/audio/transcriptions"): {415},
    ("post", "/v1/audio/translations"): {415},
    ("get", "/v1/models/{model_id}"): {404},
    ("get", "/api/webhooks/secret"): {403, 422},
    ("post", "/api/voices"): {400, 404, 409, 415},
    ("get", "/api/voices/{voice_id}"): {400, 404},
    ("patch", "/api/voices/{voice_id}"): {400, 404, 409},
    ("delete", "/api/voices/{voice_id}"): {400, 404},
}
UNSAFE = {"post", "put", "patch", "delete"}  # a foreign Origin on these is answered 403 origin_not_allowed

# Routes whose options are read from a form body too, but which declare no body of their own
FORM_OPTIONS = {
    ("post", "/api/transcribe"): (TranscribeParams, FormatParams),
    ("post", "/api/transcribe/stream"): (TranscribeParams,),
}


def error_statuses(method: str, path: str, operation: dict, *, keys_on: bool, rate_limited: bool) -> set[int]:
    statuses = {500} | ({403} if method in UNSAFE else set())
    if path.startswith(PROTECTED):
        if keys_on:
            statuses |= {401, 429}
        if rate_limited:
            statuses.add(429)
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413}  # an unreadable form; any body is under MAX_UPLOAD_MB
    return statuses | EXTRA.get((method, path), set())


def error_response(status: int) -> dict:
    response: dict = {
        "description": DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "required": True, "description": "seconds", "schema": {"type": "string", "pattern": "^[0-9]+$"}
            }  # fmt: skip
        }
    return response


def _id_patterns(operation: dict) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["name"] in ("clip_id", "job_id", "voice_id"):
            schema = parameter["schema"]
            for option in schema.get("anyOf", [schema]):
                if option.get("type") == "string":
                    option["pattern"] = ID_PATTERN


def document_errors(schema: dict, *, keys_on: bool, rate_limited: bool) -> dict:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_SCHEMA] = ERROR_COMPONENT
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _id_patterns(operation)
            if (method, path) in FORM_OPTIONS and "requestBody" not in operation:
                operation.update(form_body_schema(*FORM_OPTIONS[(method, path)]))
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(method, path, operation, keys_on=keys_on, rate_limited=rate_limited)):
                responses[str(status)] = error_response(status)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Wraps whatever app.openapi is by now (install_auth adds the security schemes)."""
    previous = app.openapi
    done = False

    def openapi() -> dict:
        nonlocal done
        schema = previous()
        if not done:
            keys_on = bool(getattr(app.state, "api_keys_on", False))
            document_errors(schema, keys_on=keys_on, rate_limited=settings.rate_limit_per_min > 0)
            app.openapi_schema = schema
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

