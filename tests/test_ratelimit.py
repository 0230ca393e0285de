"""Rate limits (the `limits` library): the middleware on its own, then through real servers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from jobs_support import ThreadedServer, assert_error
from live_server import live_server
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.api.auth import ConfigurationError
from shared.api.ratelimit import RateLimit, rate_limit_item
from shared.core.config import Settings

ANY_ID = "0" * 32


def limited_app() -> RateLimit:
    async def ok(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/api/thing", ok), Route("/healthz", ok)])
    return RateLimit(app, per_minute=60, burst=2)  # 2 requests per 2 s


def test_burst_and_rate_make_one_moving_window():
    assert (rate_limit_item(60, 2).amount, rate_limit_item(60, 2).get_expiry()) == (2, 2)
    assert (rate_limit_item(2, 0).amount, rate_limit_item(2, 0).get_expiry()) == (2, 60)  # burst: the rate
    assert rate_limit_item(600, 1).get_expiry() == 1  # never under a second


def test_the_window_refills_and_headers_buy_no_fresh_budget():
    asyncio.run(_window_checks())


async def _window_checks():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited_app()), base_url="http://t") as c:
        assert [(await c.get("/api/thing")).status_code for _ in range(3)] == [200, 200, 429]
        refused = await c.get("/api/thing")
        assert refused.json()["error"]["code"] == "rate_limited" and 1 <= int(refused.headers["retry-after"]) <= 2
        # without authentication a header is not an identity: rotating it buys nothing
        for key in ("other", "another"):
            assert (await c.get("/api/thing", headers={"X-API-Key": key})).status_code == 429
        assert (await c.get("/healthz")).status_code == 200  # never limited
        await asyncio.sleep(2.1)
        assert (await c.get("/api/thing")).status_code == 200


def keyed_app(tmp_path, **settings):
    base = {"api_keys": "key-one-0123456789,key-two-0123456789", "rate_limit_per_min": 2, "rate_limit_burst": 2, "auth_failures_per_min": 100}
    return create_app(Settings(_env_file=None, audio_storage_path=tmp_path, **(base | settings)), runner=NoModels())


def test_limits_follow_the_authenticated_key(tmp_path):
    with ThreadedServer(keyed_app(tmp_path)) as s, s.client() as c:
        k1, k2 = {"X-API-Key": "key-one-0123456789"}, {"Authorization": "Bearer key-two-0123456789"}
        assert [c.get(f"/api/jobs/{ANY_ID}", headers=k1).status_code for _ in range(3)] == [404, 404, 429]
        for _ in range(3):  # refused keys are answered before the limit and spend no one's budget
            assert_error(c.get("/v1/models", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert c.get("/v1/models", headers=k2).status_code == 200  # another key, another budget
        assert c.get("/v1/models", headers=k2).status_code == 200
        assert_error(c.get("/v1/models", headers=k2), 429, "rate_limited")
        assert c.get("/metrics", headers=k1).status_code == 200  # scrapes are not limited


def test_without_keys_the_address_is_the_identity(tmp_path):
    with ThreadedServer(keyed_app(tmp_path, api_keys="")) as s, s.client() as c:
        codes = [c.get("/v1/models", headers={"X-API-Key": f"made-up-{i}"}).status_code for i in range(3)]
        assert codes == [200, 200, 429]
        limited = c.get("/v1/models")
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_an_unusable_storage_refuses_to_start(tmp_path):
    with pytest.raises(ConfigurationError, match="RATE_LIMIT_STORAGE='bogus://x' cannot be used"):
        keyed_app(tmp_path, rate_limit_storage="bogus://x", rate_limit_per_min=0)  # checked even with limits off


def test_storage_setting_accepts_limits_uris(tmp_path):
    for uri in ("memory://", "async+memory://"):
        with ThreadedServer(keyed_app(tmp_path, rate_limit_storage=uri)) as s, s.client() as c:
            codes = [c.get("/v1/models", headers={"X-API-Key": "key-one-0123456789"}).status_code for _ in range(3)]
            assert codes == [200, 200, 429]


@pytest.mark.slow
def test_the_server_limits_per_key(tmp_path):
    env = {"API_KEYS": "key-one-0123456789,key-two-0123456789", "RATE_LIMIT_PER_MIN": "2", "RATE_LIMIT_BURST": "2"}
    with live_server(tmp_path, env=env) as server, server.client() as c:
        k1, k2 = {"X-API-Key": "key-one-0123456789"}, {"Authorization": "Bearer key-two-0123456789"}
        codes = [c.get(f"/api/audio/{'0' * 32}", headers=k1).status_code for _ in range(3)]
        assert codes == [404, 404, 429]
        limited = c.get("/api/jobs/" + "0" * 32, headers=k1)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get(f"/api/audio/{'0' * 32}", headers=k2).status_code == 404  # another key, another bucket
        assert c.get("/healthz").status_code == 200
        assert c.get("/api/workers").status_code == 401  # no key: refused before it spends a token
