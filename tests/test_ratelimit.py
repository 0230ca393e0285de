"""Rate limits: the token bucket on its own (a controlled clock), then through a real server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from live_server import live_server
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.api.ratelimit import RateLimit


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_app(clock: Clock) -> RateLimit:
    async def ok(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/api/thing", ok), Route("/healthz", ok)])
    return RateLimit(app, per_minute=60, burst=2, clock=clock)


def test_bucket_refills_at_the_rate_and_each_client_has_its_own():
    asyncio.run(_bucket_checks())


async def _bucket_checks():
    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited_app(clock)), base_url="http://t") as c:
        assert [(await c.get("/api/thing")).status_code for _ in range(3)] == [200, 200, 429]
        refused = await c.get("/api/thing")
        assert refused.json()["error"]["code"] == "rate_limited" and refused.headers["retry-after"] == "1"
        assert (await c.get("/api/thing", headers={"X-API-Key": "other"})).status_code == 200  # its own bucket
        assert (await c.get("/healthz")).status_code == 200  # never limited
        clock.now += 1.0  # one token a second at 60 a minute
        assert (await c.get("/api/thing")).status_code == 200
        assert (await c.get("/api/thing")).status_code == 429


@pytest.mark.slow
def test_the_server_limits_per_key(tmp_path):
    env = {"API_KEYS": "k1,k2", "RATE_LIMIT_PER_MIN": "2", "RATE_LIMIT_BURST": "2"}
    with live_server(tmp_path, env=env) as server, server.client() as c:
        k1, k2 = {"X-API-Key": "k1"}, {"Authorization": "Bearer k2"}
        codes = [c.get(f"/api/audio/{'0' * 32}", headers=k1).status_code for _ in range(3)]
        assert codes == [404, 404, 429]
        limited = c.get("/api/jobs/" + "0" * 32, headers=k1)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get(f"/api/audio/{'0' * 32}", headers=k2).status_code == 404  # another key, another bucket
        assert c.get("/healthz").status_code == 200
        assert c.get("/api/workers").status_code == 401  # no key: refused before it spends a token
