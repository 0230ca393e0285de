"""Live tickets: how a browser opens a WebSocket without putting its API key in the URL.

Browsers cannot set headers on a WebSocket, and a URL ends up in access logs, proxies and the browser's
history. So the page asks `POST /api/live/tickets` (its key in a header, as for any API call) for a ticket
and opens `/ws/stream?ticket=...` (or `/v1/realtime?...&ticket=...`) with it. A ticket:

- is short-lived: LIVE_TICKET_TTL_S (30 s) to open its WebSocket;
- is single-use: the first handshake that presents it spends it, whatever the answer;
- is bound to the caller: the connection gets the identity of the key (or, without keys, the address) that
  asked for it, so a resume, the per-key stream limit and the rate limits see the same caller;
- is signed, not stored: `<base64 payload>.<base64 HMAC-SHA256>` over its nonce, expiry and identity, checked
  with a constant-time compare, so any server process with the same keys accepts it (several Modal web
  containers). The signing secret is derived from API_KEYS (random per process without keys).

Spent tickets are remembered, until they would have expired anyway, where the rate-limit counters live
(RATE_LIMIT_STORAGE: this process, or a store shared by every server), one entry per redeemed ticket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from fastapi import APIRouter, Request
from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field

from shared.api.identity import caller_identity

MAX_TICKET_CHARS = 512  # a real one is about 120; anything longer is not read
_SECRET_CONTEXT = b"whospoke live tickets v1\0"


def ticket_secret(keys: frozenset[str]) -> bytes:
    """The signing secret: the same in every process that serves the same keys; random without keys."""
    if not keys:
        return secrets.token_bytes(32)
    return hashlib.sha256(_SECRET_CONTEXT + "\n".join(sorted(keys)).encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LiveTickets:
    def __init__(self, secret: bytes, ttl_s: int, storage: Storage):
        self.secret = secret
        self.ttl_s = ttl_s
        self.spent = MovingWindowRateLimiter(storage)  # spent nonces, each until its ticket's expiry
        self.once = RateLimitItemPerSecond(1, ttl_s + 1)  # a second hit on a nonce inside its lifetime fails

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, payload, hashlib.sha256).digest()

    def issue(self, identity: str) -> str:
        expires_ms = int((time.time() + self.ttl_s) * 1000)
        payload = f"{secrets.token_urlsafe(16)}.{expires_ms}.{identity}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    async def redeem(self, ticket: str) -> str | None:
        """The identity the ticket was issued to; None if it is forged, expired or already spent."""
        if len(ticket) > MAX_TICKET_CHARS or ticket.count(".") != 1:
            return None
        body, signature = ticket.split(".")
        try:
            payload, given = _unb64(body), _unb64(signature)
        except ValueError:  # binascii.Error: not base64
            return None
        if not hmac.compare_digest(given, self._sign(payload)):
            return None
        nonce, expires_ms, identity = payload.decode().split(".", 2)
        if int(expires_ms) <= time.time() * 1000:
            return None
        if not await self.spent.hit(self.once, "live-ticket", nonce):
            return None
        return identity


# --- the route that issues them -------------------------------------------------------------------------

router = APIRouter(prefix="/api/live", tags=["live"])


class LiveTicket(BaseModel):
    ticket: str = Field(description="pass as ?ticket= on /ws/stream or /v1/realtime; opens one WebSocket")
    expires_in: int = Field(description="seconds left to open it (LIVE_TICKET_TTL_S)")


@router.post("/tickets", response_model=LiveTicket)
def create_ticket(request: Request) -> LiveTicket:
    """A single-use ticket for one live WebSocket, bound to the caller's API key: what a browser sends
    instead of its key, which must never be in a URL (URLs are logged)."""
    tickets: LiveTickets = request.app.state.live_tickets
    return LiveTicket(ticket=tickets.issue(caller_identity(request.scope)), expires_in=tickets.ttl_s)
