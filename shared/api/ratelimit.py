"""Rate limits on /api and /v1, per caller, built on the `limits` library.

A caller is who the auth middleware says it is (shared/api/auth.py): the authenticated API key, or the
client address when keys are off — never a header the caller merely sends. RATE_LIMIT_PER_MIN requests
a minute, in bursts of up to RATE_LIMIT_BURST: a moving window of RATE_LIMIT_BURST requests per
RATE_LIMIT_BURST * 60 / RATE_LIMIT_PER_MIN seconds. Past it: 429 `rate_limited` with Retry-After.

The counters live where RATE_LIMIT_STORAGE says: `memory://` (this process; on Modal, per web
container), or a shared store when the service is scaled out, e.g. `redis://host:6379` (install
`limits[async-redis]`). Any storage URI of `limits` works; the async variant is used.
"""

from __future__ import annotations

import math
import time

from fastapi import FastAPI
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.api.auth import IDENTITY, PROTECTED, client_address, is_protected, limiter_storage
from shared.api.error_responses import error_response
from shared.core.config import Settings
from shared.core.errors import error_code

LIMITED = tuple(p for p in PROTECTED if p != "/metrics")  # a scraper is not a client
RATE_LIMITED = error_code("rate_limited")


def rate_limit_item(per_minute: int, burst: int) -> RateLimitItem:
    """`burst` requests per the seconds in which `per_minute` would allow that many (at least one)."""
    burst = burst or per_minute
    return RateLimitItemPerSecond(burst, max(1, round(burst * 60 / per_minute)))


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        per_minute: int,
        burst: int = 0,
        storage_uri: str = "memory://",
        prefixes: tuple[str, ...] = LIMITED,
    ):
        self.app = app
        self.item = rate_limit_item(per_minute, burst)
        self.limiter = MovingWindowRateLimiter(limiter_storage(storage_uri))
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope, self.prefixes):
            return await self.app(scope, receive, send)
        caller = scope.get(IDENTITY) or "addr:" + client_address(scope)
        if await self.limiter.hit(self.item, "requests", caller):
            return await self.app(scope, receive, send)
        stats = await self.limiter.get_window_stats(self.item, "requests", caller)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        message = f"too many requests: try again in {retry_after} s"
        response = error_response(RATE_LIMITED.status, RATE_LIMITED.code, message, {"retry-after": str(retry_after)})
        await response(scope, receive, send)


def install_rate_limit(app: FastAPI, settings: Settings) -> None:
    limiter_storage(settings.rate_limit_storage)  # a bad URI refuses to start, even with limits off
    if settings.rate_limit_per_min > 0:
        app.add_middleware(
            RateLimit,
            per_minute=settings.rate_limit_per_min,
            burst=settings.rate_limit_burst,
            storage_uri=settings.rate_limit_storage,
        )
