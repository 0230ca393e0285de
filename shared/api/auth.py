"""API keys: when API_KEYS is set, every /api and /v1 request needs one of them, sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. /healthz and the docs stay open.

A middleware rather than a route dependency: a router added later cannot forget it, and an upload
without a key is refused before its body is read.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import Settings

PROTECTED = ("/api", "/v1")


def parse_api_keys(value: str | None) -> frozenset[str]:
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: frozenset[str], prefixes: tuple[str, ...] = PROTECTED):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.prefixes = prefixes

    def _protected(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def _valid(self, key: str | None) -> bool:
        if key is None:
            return False
        given = key.encode()
        # compare with every key, so the time taken does not tell which one nearly matched
        return any([hmac.compare_digest(given, k) for k in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or not self._protected(scope):
            return await self.app(scope, receive, send)
        key = presented_key(dict(scope.get("headers") or []))
        if self._valid(key):
            return await self.app(scope, receive, send)
        if key is None:
            message = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        else:
            message = "the API key is not valid"
        error = {"code": "unauthorized", "message": message}
        if scope.get("path", "").startswith("/v1"):  # OpenAI's error shape there, a superset of ours
            error |= {"type": "invalid_request_error", "param": None}
        response = JSONResponse({"error": error}, status_code=401, headers={"www-authenticate": "Bearer"})
        await response(scope, receive, send)


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Require API keys when API_KEYS is set, and say so in the OpenAPI document."""
    keys = parse_api_keys(settings.api_keys)
    if not keys:
        return
    app.add_middleware(ApiKeyAuth, keys=keys)
    schemes = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default_openapi()
        schema.setdefault("components", {})["securitySchemes"] = schemes
        for path, operations in schema.get("paths", {}).items():
            if path.startswith(PROTECTED):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
