"""Which Host names the server answers, and which web pages may drive it.

Without API keys (the local default) the API trusts whoever can reach it, and a web page the user visits
can reach `http://127.0.0.1:8000` too: it can open a WebSocket (no same-origin rule applies to them), POST
a multipart form (no CORS preflight for that), and, through DNS rebinding (its own host name re-pointed
at 127.0.0.1), read every answer, since the browser then counts the API as the page's own origin. Two
checks close that, before authentication:

- **Host** (starlette's TrustedHostMiddleware): ALLOWED_HOSTS, by default, without keys, the loopback
  names and HOST; with keys, any host (a key already proves the caller). A rebinding page's requests
  carry its own host name and are answered `400 invalid_host`.
- **Origin**: a WebSocket handshake, or a POST/PUT/PATCH/DELETE, that carries an `Origin` other than the
  server's own (Origin's host and port equal to the Host header) or one listed in ALLOWED_ORIGINS is
  answered `403 origin_not_allowed`. Requests without an Origin (curl, SDKs, any non-browser client) pass.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.api.auth import parse_api_keys, refuse
from shared.core.config import Settings
from shared.core.errors import error_code

INVALID_HOST, ORIGIN_NOT_ALLOWED = error_code("invalid_host"), error_code("origin_not_allowed")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}
_PASSED = "whospoke.host_checked"


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _host_pattern(host: str) -> str:
    """A host as a Host header carries it: IPv6 literals in brackets, lower case."""
    host = host.strip().lower()
    try:
        return f"[{IPv6Address(host.strip('[]'))}]"
    except ValueError:
        return host


def allowed_hosts(settings: Settings) -> list[str]:
    """ALLOWED_HOSTS, or its default: any host with API keys, else the loopback names and HOST."""
    if settings.allowed_hosts.strip():
        return [_host_pattern(h) for h in _split(settings.allowed_hosts)]
    if parse_api_keys(settings.api_keys):
        return ["*"]
    return list(dict.fromkeys(_host_pattern(h) for h in (*LOOPBACK_NAMES, settings.host)))


class HostCheck:
    """starlette's TrustedHostMiddleware decides; a refusal is answered in the API's error shape."""

    def __init__(self, app: ASGIApp, hosts: list[str]):
        self.app = app
        self.trusted = TrustedHostMiddleware(self._passed, allowed_hosts=hosts, www_redirect=False)

    @staticmethod
    async def _passed(scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED] = True

    @staticmethod
    async def _discard(message) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await self.trusted(scope, receive, self._discard)  # its own plain-text refusal goes nowhere
            if not scope.pop(_PASSED, False):
                message = ("this server does not answer to the host name in the Host header; set ALLOWED_HOSTS "
                           "to serve it under that name")
                return await refuse(scope, receive, send, INVALID_HOST, message)
        await self.app(scope, receive, send)


def _origin_netloc(origin: str) -> str | None:
    """`host:port` of an Origin (the scheme's default port made explicit); None if it is not one."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{_host_pattern(parts.hostname)}:{port or DEFAULT_PORTS[parts.scheme]}"


def _host_netloc(host: str, scheme: str) -> str:
    """`host:port` of a Host header, with the default port of the origin's scheme when it names none."""
    host = host.strip().lower()
    name, sep, port = host.rpartition(":")
    if not sep or name.endswith(":") or (host.startswith("[") and not name.endswith("]")):  # no port
        name, port = host, DEFAULT_PORTS.get(scheme, "80")
    return f"{_host_pattern(name)}:{port}"


class OriginCheck:
    def __init__(self, app: ASGIApp, origins: list[str]):
        self.app = app
        self.any = "*" in origins
        self.origins = {o.rstrip("/").lower() for o in origins}

    def allowed(self, origin: str, host: str) -> bool:
        if self.any or origin.rstrip("/").lower() in self.origins:
            return True
        netloc = _origin_netloc(origin)
        scheme = urlsplit(origin).scheme if netloc else ""
        return netloc is not None and bool(host) and netloc == _host_netloc(host, scheme)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = scope["type"] == "websocket" or (scope["type"] == "http" and scope["method"] not in SAFE_METHODS)
        if checked:
            headers = {k: v.decode("latin-1") for k, v in scope.get("headers") or [] if k in (b"origin", b"host")}
            origin = headers.get(b"origin")
            if origin is not None and not self.allowed(origin, headers.get(b"host", "")):
                message = ("a page of another origin may not open WebSockets or send POST, PUT, PATCH or DELETE "
                           "requests here; list it in ALLOWED_ORIGINS to allow it")
                return await refuse(scope, receive, send, ORIGIN_NOT_ALLOWED, message)
        await self.app(scope, receive, send)


def install_host_and_origin_checks(app: FastAPI, settings: Settings) -> None:
    """Add both checks (call after install_auth: they run before it, so a refused request spends no ticket)."""
    app.add_middleware(OriginCheck, origins=_split(settings.allowed_origins))
    hosts = allowed_hosts(settings)
    if "*" not in hosts:
        app.add_middleware(HostCheck, hosts=hosts)
