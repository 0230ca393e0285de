"""Rate limits: a token bucket per client on /api and /v1. A client is its API key when it sends one,
else its address. RATE_LIMIT_PER_MIN requests a minute, in bursts of up to RATE_LIMIT_BURST; past that,
429 with Retry-After. Buckets live in this process (on Modal: per web container)."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.api.auth import PROTECTED, presented_key
from shared.api.errors import error_response
from shared.config import Settings

MAX_CLIENTS = 10_000  # buckets kept before full, idle ones are forgotten


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        per_minute: int,
        burst: int,
        prefixes: tuple[str, ...] = PROTECTED,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(burst)
        self.prefixes = prefixes
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not any(path == p or path.startswith(p + "/") for p in self.prefixes):
            return await self.app(scope, receive, send)
        wait = self._take(self._client(scope))
        if wait <= 0:
            return await self.app(scope, receive, send)
        retry_after = max(1, math.ceil(wait))
        response = error_response(
            429, "rate_limited", f"too many requests: try again in {retry_after} s", {"retry-after": str(retry_after)}
        )
        await response(scope, receive, send)

    def _client(self, scope: Scope) -> str:
        key = presented_key(dict(scope.get("headers") or []))
        if key:
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
        client = scope.get("client")
        return "addr:" + (client[0] if client else "unknown")

    def _take(self, client: str) -> float:
        """Take one token; 0 if there was one, else the seconds until there will be."""
        now = self.clock()
        tokens, when = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens >= 1:
            self.buckets[client] = (tokens - 1, now)
            self._forget_idle(now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        if len(self.buckets) <= MAX_CLIENTS:
            return
        full_after = self.burst / self.rate
        self.buckets = {c: (t, w) for c, (t, w) in self.buckets.items() if now - w < full_after}


def install_rate_limit(app: FastAPI, settings: Settings) -> None:
    if settings.rate_limit_per_min > 0:
        burst = settings.rate_limit_burst or settings.rate_limit_per_min
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_min, burst=burst)
