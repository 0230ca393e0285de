"""API keys: when API_KEYS is set, every /api and /v1 request, the WebSockets (/ws/stream, /v1/realtime)
and /metrics need one of them, sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`. A browser
cannot set headers on a WebSocket, and a URL is logged, so a key is never taken from a URL (`api_key=` is
refused with a 401 that says what to do instead); a WebSocket may present instead:
- `?ticket=<ticket>` from `POST /api/live/tickets` (shared/api/tickets.py): short-lived, single-use, bound
  to the key that asked for it;
- on the OpenAI Realtime route (and /ws/stream), the subprotocol `openai-insecure-api-key.<key>` beside
  `realtime`, as OpenAI's browser clients send it; the handshake is answered with `realtime` (or another
  protocol the client offered), never with the key's.
/healthz, the page and the docs stay open.

Fails closed: with REQUIRE_API_KEYS=true (always on the public Modal endpoint) the app refuses to start
when API_KEYS is empty; keys shorter than MIN_KEY_CHARS, or that cannot be sent in a header (spaces,
control or non-ASCII characters), refuse to start in any case. Wrong keys are throttled per client
address: past AUTH_FAILURES_PER_MIN wrong keys in a minute, further wrong keys are answered 429
`too_many_auth_failures` (with Retry-After) until the window has moved on. A right key always passes,
so clients sharing an address (behind a proxy) are never locked out by a guesser among them; guessing
itself is hopeless against keys of 16 characters or more.

A middleware rather than a route dependency: a router added later cannot forget it, and an upload
without a key is refused before its body is read. It records who the caller is (shared/api/identity.py:
the key's digest, the ticket's owner, or the address when keys are off) in the request scope, for the
rate limit (shared/api/ratelimit.py) and the live streams' per-key limit.
"""

from __future__ import annotations

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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.identity import IDENTITY, client_address, key_id
from shared.api.tickets import LiveTickets, ticket_secret
from shared.core.config import Settings
from shared.core.errors import ErrorCode, error_code

__all__ = ["IDENTITY", "client_address", "key_id"]  # re-exported: the live routes and the rate limit read them

PROTECTED = ("/api", "/v1", "/ws", "/metrics")
MIN_KEY_CHARS = 16
_KEY = re.compile(r"[!-~]+")  # printable ASCII without spaces: what a header can carry unchanged
KEY_PROTOCOL = "openai-insecure-api-key."  # OpenAI's browser clients: the key as a WebSocket subprotocol
UNAUTHORIZED, TOO_MANY_AUTH_FAILURES = error_code("unauthorized"), error_code("too_many_auth_failures")
BEARER = {"www-authenticate": "Bearer"}
HEADERS_HINT = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
BROWSER_HINT = (
    "a browser's WebSocket: get a ticket with POST /api/live/tickets (key in a header) and connect with "
    f"?ticket=<ticket>, or on /v1/realtime offer the subprotocols 'realtime' and '{KEY_PROTOCOL}<key>'"
)
KEY_IN_URL = f"API keys are not accepted in URLs (URLs are logged): {HEADERS_HINT}; {BROWSER_HINT}"
BAD_TICKET = ("the ticket is not valid: it expired (a ticket lasts LIVE_TICKET_TTL_S), was used already, or was "
              "not issued here; get a new one with POST /api/live/tickets right before connecting")
OTHER_CALLER = "the ticket was issued to another caller than the one presenting it"


class ConfigurationError(RuntimeError):
    """A setting the server cannot start with; the message says which and how to fix it."""


def parse_api_keys(value: SecretStr | str | None) -> frozenset[str]:
    """The keys of a comma-separated API_KEYS; ConfigurationError if one could never be sent or is too short
    (the message names the key by position, never by value)."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    example = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    for i, key in enumerate(keys, 1):
        if "," in key or not _KEY.fullmatch(key):
            raise ConfigurationError(
                f"API_KEYS: key {i} of {len(keys)} contains spaces, control or non-ASCII characters and could "
                f"not be sent in a header; use comma-separated printable ASCII keys, e.g. {example}"
            )
        if len(key) < MIN_KEY_CHARS:
            raise ConfigurationError(
                f"API_KEYS: key {i} of {len(keys)} has {len(key)} characters, fewer than {MIN_KEY_CHARS}: a short "
                f"key can be guessed; use long random keys, e.g. {example}"
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


def _agree(first: str | None, second: str | None) -> str | None:
    """One credential from two ways of sending it: they must agree ("" when they do not)."""
    if first is None or second is None or first == second:
        return first if first is not None else second
    return ""


def subprotocol_key(scope: Scope) -> str | None:
    """The key a WebSocket offers as the subprotocol `openai-insecure-api-key.<key>`, if any."""
    keys = {p[len(KEY_PROTOCOL) :] for p in scope.get("subprotocols") or [] if p.startswith(KEY_PROTOCOL)}
    return (keys.pop() if len(keys) == 1 else "") if keys else None  # two different ones: never valid


def chosen_subprotocol(scope: Scope) -> str | None:
    """What the handshake answers: `realtime` if offered, else the first offered that is not a key. A
    browser that offered protocols fails a handshake answered with none."""
    offered = [p for p in scope.get("subprotocols") or [] if not p.startswith(KEY_PROTOCOL)]
    return "realtime" if "realtime" in offered else (offered[0] if offered else None)


def answer_subprotocol(scope: Scope, send: Send) -> Send:
    """`send`, with the chosen subprotocol put in an accept that names none (the routes do not choose)."""
    chosen = chosen_subprotocol(scope)
    if chosen is None:
        return send

    async def sending(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": chosen}
        await send(message)

    return sending


def query_value(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get(name)
    return values[0].strip() if values else None


def is_protected(scope: Scope, prefixes: tuple[str, ...] = PROTECTED) -> bool:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return any(path == p or path.startswith(p + "/") for p in prefixes)


async def refuse(scope: Scope, receive: Receive, send: Send, refusal: ErrorCode, message: str,
                 headers: dict | None = None) -> None:
    """Answer with the error (on /v1 in OpenAI's shape, a superset of ours); a WebSocket's handshake is
    refused with it, or closed with 1008 where the server cannot send a handshake response."""
    status, error = refusal.status, {"code": refusal.code, "message": message}
    if scope.get("path", "").startswith("/v1"):
        error |= {"type": "invalid_request_error", "param": None}
    response = JSONResponse({"error": error}, status_code=status, headers=headers)
    if scope["type"] == "http":
        return await response(scope, receive, send)
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": response.raw_headers})
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008})


class Refused(Exception):
    def __init__(self, refusal: ErrorCode, message: str, headers: dict | None = None):
        super().__init__(message)
        self.refusal, self.message, self.headers = refusal, message, headers


class ApiKeyAuth:
    def __init__(
        self,
        app: ASGIApp,
        keys: frozenset[str],
        prefixes: tuple[str, ...] = PROTECTED,
        failures_per_min: int = 10,
        storage_uri: str = "memory://",
        tickets: LiveTickets | None = None,
    ):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.prefixes = prefixes
        self.failures = RateLimitItemPerMinute(failures_per_min) if failures_per_min > 0 else None
        self.limiter = MovingWindowRateLimiter(limiter_storage(storage_uri)) if self.failures else None
        self.tickets = tickets

    def _valid(self, key: str | None) -> bool:
        if key is None:
            return False
        given = key.encode()
        # compare with every key, so the time taken does not tell which one nearly matched
        return any([hmac.compare_digest(given, k) for k in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            send = answer_subprotocol(scope, send)
        if not is_protected(scope, self.prefixes):
            return await self.app(scope, receive, send)
        try:
            scope[IDENTITY] = await self._identify(scope)
        except Refused as refused:
            return await refuse(scope, receive, send, refused.refusal, refused.message, refused.headers)
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> str:
        """Who the caller is; Refused if it may not pass."""
        websocket = scope["type"] == "websocket"
        if self.keys and query_value(scope, "api_key") is not None:
            raise Refused(UNAUTHORIZED, KEY_IN_URL, BEARER)
        key = presented_key(dict(scope.get("headers") or []))
        owner = None  # whom a presented ticket was issued to
        if websocket:
            key = _agree(key, subprotocol_key(scope))
            ticket = query_value(scope, "ticket")
            if ticket is not None:
                owner = await self.tickets.redeem(ticket) if self.tickets else None
                if owner is None:
                    raise Refused(UNAUTHORIZED, BAD_TICKET, BEARER)
        if not self.keys:
            identity = "addr:" + client_address(scope)
            if owner not in (None, identity):
                raise Refused(UNAUTHORIZED, OTHER_CALLER, BEARER)
            return identity
        if key is None and owner is not None:
            return owner
        if key is None:
            hint = f"{HEADERS_HINT}; {BROWSER_HINT}" if websocket else HEADERS_HINT
            raise Refused(UNAUTHORIZED, f"an API key is required: {hint}", BEARER)
        if self._valid(key):
            identity = key_id(key)
            if owner not in (None, identity):
                raise Refused(UNAUTHORIZED, OTHER_CALLER, BEARER)
            return identity
        address = client_address(scope)
        if self.limiter is not None and not await self.limiter.hit(self.failures, "auth-failures", address):
            stats = await self.limiter.get_window_stats(self.failures, "auth-failures", address)
            wait = max(1, math.ceil(stats.reset_time - time.time()))
            message = f"too many failed API key attempts from this address: try again in {wait} s"
            raise Refused(TOO_MANY_AUTH_FAILURES, message, {"retry-after": str(wait)})
        raise Refused(UNAUTHORIZED, "the API key is not valid", BEARER)


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Require API keys when API_KEYS is set (refuse to start without them when REQUIRE_API_KEYS is on),
    and say so in the OpenAPI document. Without keys the middleware only records the caller's address.
    The live tickets it redeems are issued by shared/api/tickets.py's route (app.state.live_tickets)."""
    keys = required_keys(settings)
    tickets = LiveTickets(ticket_secret(keys), settings.live_ticket_ttl_s, limiter_storage(settings.rate_limit_storage))
    app.state.live_tickets = tickets
    app.add_middleware(
        ApiKeyAuth,
        keys=keys,
        failures_per_min=settings.auth_failures_per_min,
        storage_uri=settings.rate_limit_storage,
        tickets=tickets,
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
