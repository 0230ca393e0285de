"""API keys: when API_KEYS is set, every /api and /v1 request, /ws/stream and /metrics need one of them,
sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`; a WebSocket may send it as the `api_key`
query parameter instead (browsers cannot set headers on one). /healthz, the page and the docs stay open.

Fails closed: with REQUIRE_API_KEYS=true (always on the public Modal endpoint) the app refuses to start
when API_KEYS is empty; keys that cannot be sent in a header (spaces, control or non-ASCII characters)
refuse to start in any case. Wrong keys are throttled per client address: after AUTH_FAILURES_PER_MIN
failed attempts in a minute, every keyed request from that address is answered 429
`too_many_auth_failures` (with Retry-After) until the window has moved on — a right key included, so
the answer never tells a guesser that a guess was right.

A middleware rather than a route dependency: a router added later cannot forget it, and an upload
without a key is refused before its body is read. It records who the caller is (the key's digest, or
the address when keys are off) in the request scope, for the rate limit (shared/api/ratelimit.py).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.core.config import Settings
from shared.core.errors import ErrorCode, error_code

PROTECTED = ("/api", "/v1", "/ws", "/metrics")
IDENTITY = "whospoke.identity"  # scope key: "key:<digest>" or "addr:<address>"
_KEY = re.compile(r"[!-~]+")  # printable ASCII without spaces: what a header can carry unchanged
UNAUTHORIZED, TOO_MANY_AUTH_FAILURES = error_code("unauthorized"), error_code("too_many_auth_failures")


class ConfigurationError(RuntimeError):
    """A setting the server cannot start with; the message says which and how to fix it."""


def parse_api_keys(value: SecretStr | str | None) -> frozenset[str]:
    """The keys of a comma-separated API_KEYS; ConfigurationError if one could never be sent."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for i, key in enumerate(keys, 1):
        if "," in key or not _KEY.fullmatch(key):
            raise ConfigurationError(
                f"API_KEYS: key {i} of {len(keys)} contains spaces, control or non-ASCII characters and could "
                "not be sent in a header; use comma-separated printable ASCII keys, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return frozenset(keys)


def limiter_storage(uri: str):
    """The async `limits` storage of a URI (memory://, redis://...); ConfigurationError if unusable."""
    uri = uri.strip() or "memory://"
    if not uri.startswith("async+"):
        uri = "async+" + uri
    try:
        return storage_from_string(uri)
    except Exception as exc:  # noqa: BLE001 - unknown scheme, missing driver, bad options
        raise ConfigurationError(f"RATE_LIMIT_STORAGE={uri.removeprefix('async+')!r} cannot be used: {exc}") from None


def required_keys(settings: Settings) -> frozenset[str]:
    """The keys the app serves with; refuses an empty set when REQUIRE_API_KEYS is on."""
    keys = parse_api_keys(settings.api_keys)
    if settings.require_api_keys and not keys:
        raise ConfigurationError(
            "REQUIRE_API_KEYS is on but API_KEYS is empty: refusing to serve without keys. Set API_KEYS to "
            "one or more comma-separated keys (on Modal: in the API-keys Secret)"
        )
    return keys


def key_id(key: str) -> str:
    """What identifies a key in rate limits and logs: never the key itself."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def client_address(scope: Scope) -> str:
    """The TCP peer (behind a trusted proxy, uvicorn's --forwarded-allow-ips makes it the real client)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key a request presents (`Authorization: Bearer <key>` or `X-API-Key: <key>`), None if it
    presents none. When it sends both headers they must agree, and an Authorization header beside
    X-API-Key must be a Bearer key: otherwise "" (never a valid key), so no header can be tried while
    another carries a good key."""
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = auth.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip() or None
    if key is not None and auth and bearer != key:
        return ""
    return bearer or key


def is_protected(scope: Scope, prefixes: tuple[str, ...] = PROTECTED) -> bool:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return any(path == p or path.startswith(p + "/") for p in prefixes)


class ApiKeyAuth:
    def __init__(
        self,
        app: ASGIApp,
        keys: frozenset[str],
        prefixes: tuple[str, ...] = PROTECTED,
        failures_per_min: int = 10,
        storage_uri: str = "memory://",
    ):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.prefixes = prefixes
        self.failures = RateLimitItemPerMinute(failures_per_min) if failures_per_min > 0 else None
        self.limiter = MovingWindowRateLimiter(limiter_storage(storage_uri)) if self.failures else None

    def _valid(self, key: str | None) -> bool:
        if key is None:
            return False
        given = key.encode()
        # compare with every key, so the time taken does not tell which one nearly matched
        return any([hmac.compare_digest(given, k) for k in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_protected(scope, self.prefixes):
            return await self.app(scope, receive, send)
        address = client_address(scope)
        if not self.keys:
            scope[IDENTITY] = "addr:" + address
            return await self.app(scope, receive, send)
        key = presented_key(dict(scope.get("headers") or []))
        if key is None and scope["type"] == "websocket":
            key = _query_key(scope)
        if key is not None and self.limiter is not None:
            if not await self.limiter.test(self.failures, "auth-failures", address):
                stats = await self.limiter.get_window_stats(self.failures, "auth-failures", address)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                message = f"too many failed API key attempts from this address: try again in {wait} s"
                return await self._refuse(scope, receive, send, TOO_MANY_AUTH_FAILURES, message,
                                          {"retry-after": str(wait)})
        if self._valid(key):
            scope[IDENTITY] = key_id(key)  # type: ignore[arg-type]
            return await self.app(scope, receive, send)
        if key is None:
            message = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        else:
            message = "the API key is not valid"
            if self.limiter is not None:
                await self.limiter.hit(self.failures, "auth-failures", address)
        await self._refuse(scope, receive, send, UNAUTHORIZED, message, {"www-authenticate": "Bearer"})

    async def _refuse(self, scope, receive, send, refusal: ErrorCode, message: str, headers: dict) -> None:
        status, error = refusal.status, {"code": refusal.code, "message": message}
        if scope.get("path", "").startswith("/v1"):  # OpenAI's error shape there, a superset of ours
            error |= {"type": "invalid_request_error", "param": None}
        response = JSONResponse({"error": error}, status_code=status, headers=headers)
        if scope["type"] == "http":
            return await response(scope, receive, send)
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):  # refuse the handshake with the JSON
            await send({"type": "websocket.http.response.start", "status": status, "headers": response.raw_headers})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def _query_key(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
    return values[0].strip() if values else None


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Require API keys when API_KEYS is set (refuse to start without them when REQUIRE_API_KEYS is on),
    and say so in the OpenAPI document. Without keys the middleware only records the caller's address."""
    keys = required_keys(settings)
    app.add_middleware(
        ApiKeyAuth,
        keys=keys,
        failures_per_min=settings.auth_failures_per_min,
        storage_uri=settings.rate_limit_storage,
    )
    app.state.api_keys_on = bool(keys)
    if not keys:
        return
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
