"""Who is calling: what the auth middleware (shared/api/auth.py) records in the request scope, and what the
rate limits, the live streams' per-key limit and the live tickets read back. Never the key itself."""

from __future__ import annotations

import hashlib

from starlette.types import Scope

IDENTITY = "whospoke.identity"  # scope key: "key:<digest>" or "addr:<address>"


def key_id(key: str) -> str:
    """What identifies a key in rate limits and logs: never the key itself."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def client_address(scope: Scope) -> str:
    """The TCP peer (behind a trusted proxy, uvicorn's --forwarded-allow-ips makes it the real client)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def caller_identity(scope: Scope) -> str:
    """The identity auth recorded: the key's digest, or the client address when keys are off."""
    return scope.get(IDENTITY) or "addr:" + client_address(scope)
