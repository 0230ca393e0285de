"""Who may open a live WebSocket (/ws/stream, /v1/realtime), before any session is made.

Each open, a resume included, spends one of STREAM_OPENS_PER_MIN a minute per caller (a moving window of
the `limits` library, counted where RATE_LIMIT_STORAGE says, as shared/api/ratelimit.py does): past it
the socket gets `too_many_opens` and close 4429. The slots themselves (STREAM_MAX_PER_KEY,
STREAM_MAX_TOTAL) are the hub's (shared/live/registry.py). The caller is who the auth middleware says
it is: the API key, or the client address when keys are off.
"""

from __future__ import annotations

from fastapi import WebSocket
from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter

from shared.api.auth import IDENTITY, client_address, limiter_storage


def identity_of(websocket: WebSocket) -> str:
    return websocket.scope.get(IDENTITY) or "addr:" + client_address(websocket.scope)


def owner_of(websocket: WebSocket) -> str:
    """Whose enrolled voices the connection may use: its API key's id, or "" with keys off (as the HTTP
    routes' owner: shared/api/clips.py)."""
    identity = websocket.scope.get(IDENTITY) or ""
    return identity if identity.startswith("key:") else ""


class OpensLimit:
    def __init__(self, per_minute: int, storage_uri: str):
        self.per_minute = per_minute
        self.item = RateLimitItemPerMinute(per_minute)
        self.limiter = MovingWindowRateLimiter(limiter_storage(storage_uri))

    async def allow(self, identity: str) -> bool:
        return await self.limiter.hit(self.item, "live-opens", identity)


async def open_refused(websocket: WebSocket) -> str | None:
    """Why this open is refused (the message of `too_many_opens`, which the protocol sends), or None."""
    settings = websocket.app.state.settings
    if settings.stream_opens_per_min <= 0:
        return None
    limit = getattr(websocket.app.state, "live_opens", None)
    if limit is None:  # one per app, made on first use (no await in between: no race)
        limit = websocket.app.state.live_opens = OpensLimit(settings.stream_opens_per_min, settings.rate_limit_storage)
    if await limit.allow(identity_of(websocket)):
        return None
    return f"more than {limit.per_minute} live connections opened in a minute: wait before opening another"
