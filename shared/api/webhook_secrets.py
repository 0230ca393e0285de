"""GET /api/webhooks/secret: the secret a caller's webhooks are signed with, when each API key has its own.

With WEBHOOK_SECRET_PER_KEY=true, the jobs of each API key are signed with a secret derived from
WEBHOOK_SECRET and the key's id (shared/jobs/webhooks.py key_secret): a key holder verifies its own
webhooks and cannot verify (or forge, towards a receiver that trusts them) another key's. This route
hands the caller its own, formatted `whsec_<base64>` as Standard Webhooks libraries take it. Without
per-key secrets, WEBHOOK_SECRET signs everyone's webhooks and is the operator's to hand out: refused
(403 webhook_secret_shared). With keys off, the one local user gets the secret of owner "".
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from shared.api.clips import owner
from shared.core.errors import WebhooksDisabled, WebhookSecretShared
from shared.jobs.webhooks import format_secret, key_secret, parse_secret

router = APIRouter(prefix="/api", tags=["jobs"])


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_<base64>: verify the webhooks of your jobs with it")


@router.get("/webhooks/secret", response_model=WebhookSecret)
def webhook_secret(request: Request, response: Response, caller: str = Depends(owner)) -> WebhookSecret:
    """The secret the caller's job webhooks are signed with (WEBHOOK_SECRET_PER_KEY=true only)."""
    settings = request.app.state.settings
    if not settings.webhook_secret:
        raise WebhooksDisabled("webhooks are off on this server: it needs WEBHOOK_SECRET (whsec_<base64>)")
    if not settings.webhook_secret_per_key:
        raise WebhookSecretShared(
            "this server signs every webhook with one secret (WEBHOOK_SECRET_PER_KEY is off): its operator "
            "hands it out"
        )
    response.headers["cache-control"] = "no-store"
    return WebhookSecret(secret=format_secret(key_secret(parse_secret(settings.webhook_secret), caller)))
