"""The edge of an exposed server, attacked through real servers (tests/live_server.py, `python -m
shared.api`): pages of other origins, other host names (DNS rebinding), keys in URLs, live tickets (single
use, expiry, bound to their key), the Realtime subprotocol key, the access log, the wrong-key throttle,
oversize WebSocket messages, and the settings a server refuses to start with. Each attack is short and
ends by checking that /healthz still answers."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
import websockets
from live_server import live_server

KEY_A, KEY_B = "edge-key-a-0123456789", "edge-key-b-0123456789"
TICKET_TTL_S = 3
EVIL = "http://evil.example"
REALTIME = "/v1/realtime?intent=transcription"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    env = {"API_KEYS": f"{KEY_A},{KEY_B}", "LIVE_TICKET_TTL_S": str(TICKET_TTL_S), "AUTH_FAILURES_PER_MIN": "3",
           "LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}  # the access log, written as it happens
    with live_server(tmp_path_factory.mktemp("edge-keyed"), env=env) as s:
        yield s


def ws(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def own_origin(server) -> str:
    return server.url  # http://127.0.0.1:<port>


def first_event(url: str, **connect) -> dict:
    """The first event the server sends on a WebSocket; websockets.InvalidStatus if the handshake is refused."""

    async def run() -> dict:
        async with websockets.connect(url, open_timeout=30, **connect) as socket_:
            return json.loads(await asyncio.wait_for(socket_.recv(), 30))

    return asyncio.run(run())


def refused(url: str, **connect) -> tuple[int, dict]:
    """The status and error of a refused handshake."""
    with pytest.raises(websockets.InvalidStatus) as info:
        first_event(url, **connect)
    response = info.value.response
    return response.status_code, json.loads(response.body)["error"]


def ticket(server, key: str | None = KEY_A) -> str:
    r = httpx.post(f"{server.url}/api/live/tickets", headers={"X-API-Key": key} if key else {}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["expires_in"] == (TICKET_TTL_S if key else 30)
    return r.json()["ticket"]


def healthy(server) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=30).json()["status"] == "ok"


# --- origins: another site's page may not drive the server ---------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("path", ["/ws/stream", REALTIME])
def test_a_foreign_origin_cannot_open_a_websocket(server, path):
    """The open server (no keys, the local default): what any page the user visits could otherwise do."""
    status, error = refused(ws(server, path), origin=EVIL)
    assert (status, error["code"]) == (403, "origin_not_allowed") and "ALLOWED_ORIGINS" in error["message"]
    assert refused(ws(server, path), origin="null")[0] == 403  # a sandboxed frame, a file:// page
    first = "session" if path == "/ws/stream" else "session.created"
    assert first_event(ws(server, path), origin=own_origin(server))["type"] == first  # the page itself
    assert first_event(ws(server, path))["type"] == first  # no Origin: not a browser
    healthy(server)


@pytest.mark.slow
def test_a_foreign_origin_cannot_post(server):
    """A multipart form POST needs no CORS preflight: a foreign page could upload and start jobs."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for path in ("/api/audio", "/api/transcriptions", "/v1/audio/transcriptions"):
            r = c.post(path, files={"file": ("a.wav", b"RIFF")}, headers={"Origin": EVIL})
            assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed", (path, r.text)
        assert c.request("DELETE", f"/api/jobs/{'0' * 32}", headers={"Origin": EVIL}).status_code == 403
        assert c.get("/web/config", headers={"Origin": EVIL}).status_code == 200  # reading is not changing
        for headers in ({"Origin": own_origin(server)}, {}):  # the page itself, and a non-browser client
            r = c.post("/api/audio", files={"file": ("a.wav", b"")}, headers=headers)
            assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file", r.text
    healthy(server)


# --- hosts: a rebinding page's requests carry its own host name -----------------------------------------
@pytest.mark.slow
def test_another_host_name_is_refused(server):
    port = server.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for host in (f"rebind.evil.example:{port}", "evil.example", f"192.168.1.20:{port}"):
            r = c.get("/web/config", headers={"Host": host})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", (host, r.text)
            assert "ALLOWED_HOSTS" in r.json()["error"]["message"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert c.get("/web/config", headers={"Host": host}).status_code == 200, host
    # a WebSocket to a name that resolves here, as after a rebinding: the URL's host name is the Host header
    with socket.create_connection(("127.0.0.1", int(port))) as sock:
        status, error = refused(f"ws://rebind.evil.example:{port}/ws/stream", sock=sock)
    assert (status, error["code"]) == (400, "invalid_host")
    healthy(server)


@pytest.mark.slow
def test_with_keys_any_host_name_is_served(keyed):
    r = httpx.get(f"{keyed.url}/v1/models", headers={"Host": "api.example.com", "X-API-Key": KEY_A}, timeout=30)
    assert r.status_code == 200


# --- keys never in URLs --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("path", ["/ws/stream?api_key=", f"{REALTIME}&api_key="])
def test_a_key_in_a_websocket_url_is_refused(keyed, path):
    status, error = refused(ws(keyed, path + KEY_A))
    assert (status, error["code"]) == (401, "unauthorized")
    for hint in ("not accepted in URLs", "X-API-Key", "POST /api/live/tickets", "openai-insecure-api-key."):
        assert hint in error["message"]
    healthy(keyed)


# --- live tickets -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_ticket_opens_one_websocket_once(keyed):
    one = ticket(keyed)
    assert first_event(ws(keyed, f"/ws/stream?ticket={one}"))["type"] == "session"
    status, error = refused(ws(keyed, f"/ws/stream?ticket={one}"))  # spent
    assert (status, error["code"]) == (401, "unauthorized") and "used already" in error["message"]
    assert first_event(ws(keyed, f"{REALTIME}&ticket={ticket(keyed)}"))["type"] == "session.created"
    for forged in ("", "x", "a.b", one.replace(".", "x.", 1), "A" * 600 + "." + "B" * 40):
        assert refused(ws(keyed, f"/ws/stream?ticket={forged}"))[0] == 401, forged
    assert httpx.post(f"{keyed.url}/api/live/tickets", timeout=30).status_code == 401  # tickets need a key
    healthy(keyed)


@pytest.mark.slow
def test_a_ticket_expires(keyed):
    import time

    late = ticket(keyed)
    time.sleep(TICKET_TTL_S + 0.5)
    status, error = refused(ws(keyed, f"/ws/stream?ticket={late}"))
    assert (status, error["code"]) == (401, "unauthorized") and "expired" in error["message"]


@pytest.mark.slow
def test_a_ticket_is_bound_to_its_key(keyed):
    """The connection gets the identity of the key that asked for the ticket: a session opened with key A's
    ticket resumes with another of A's tickets, not with B's; a ticket beside another key is refused."""
    session = first_event(ws(keyed, f"/ws/stream?ticket={ticket(keyed, KEY_A)}"))["session_id"]
    resume = f"/ws/stream?session={session}&last_event=0&offset=0&ticket="
    other = first_event(ws(keyed, resume + ticket(keyed, KEY_B)))
    assert (other["type"], other["code"]) == ("error", "session_not_found")
    assert first_event(ws(keyed, resume + ticket(keyed, KEY_A)))["type"] == "session"
    status, error = refused(ws(keyed, f"/ws/stream?ticket={ticket(keyed, KEY_A)}"),
                            additional_headers={"X-API-Key": KEY_B})
    assert status == 401 and "another caller" in error["message"]
    healthy(keyed)


# --- the Realtime subprotocol key, as OpenAI's browser clients send it -----------------------------------
@pytest.mark.slow
def test_the_realtime_subprotocol_key(keyed):
    """The official `openai` Python SDK sends its key in a header only (it is a server-side client), so this
    is the browser's handshake, sent with `websockets`: the key beside `realtime`, answered with `realtime`."""

    async def handshake(protocols: list[str]) -> tuple[str | None, dict]:
        async with websockets.connect(ws(keyed, REALTIME), subprotocols=protocols, open_timeout=30) as s:
            return s.subprotocol, json.loads(await asyncio.wait_for(s.recv(), 30))

    offered = ["realtime", f"openai-insecure-api-key.{KEY_B}", "openai-beta.realtime-v1"]
    chosen, event = asyncio.run(handshake(offered))
    assert chosen == "realtime" and event["type"] == "session.created"
    status, error = refused(ws(keyed, REALTIME), subprotocols=["realtime", "openai-insecure-api-key.wrong-key-0000"])
    assert (status, error["code"]) == (401, "unauthorized") and "not valid" in error["message"]
    healthy(keyed)


# --- logs ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_access_log_lines_carry_no_query_string(keyed):
    secret_ish = "do-not-log-me"
    with httpx.Client(base_url=keyed.url, headers={"X-API-Key": KEY_A}, timeout=30) as c:
        query = {"format": "srt", "speaker_names": secret_ish}
        assert c.get(f"/api/jobs/{'0' * 32}/result", params=query).status_code == 404
    used = ticket(keyed)
    first_event(ws(keyed, f"/ws/stream?format=pcm16&ticket={used}"))
    healthy(keyed)
    log = keyed.log.read_text()
    assert f'"GET /api/jobs/{"0" * 32}/result HTTP/1.1" 404' in log  # the line is there, without its query
    assert '"WebSocket /ws/stream"' in log
    requests = [line for line in log.splitlines() if any(f'"{verb} ' in line for verb in ("GET", "POST", "WebSocket"))]
    assert len(requests) >= 4 and not [line for line in requests if "?" in line]
    assert secret_ish not in log and used not in log and KEY_A not in log


# --- the wrong-key throttle answers wrong keys only ----------------------------------------------------
@pytest.mark.slow
def test_a_valid_key_passes_while_the_address_is_throttled(keyed):
    """From an address of its own (127.0.0.2: loopback too), so the other tests' keys are not throttled."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=keyed.url, transport=transport, timeout=30) as c:
        codes = [c.get("/v1/models", headers={"X-API-Key": f"guess-{i}-0123456789"}).status_code for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        assert c.get("/v1/models", headers={"X-API-Key": KEY_A}).status_code == 200
        assert c.post("/api/live/tickets", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 200
    healthy(keyed)


# --- oversize WebSocket messages are refused by the server before they are inflated ---------------------
@pytest.mark.slow
def test_a_compressed_huge_message_is_refused_before_it_is_inflated(server):
    """16 MiB of zeros compress to a few KiB on the wire; uvicorn's ws_max_size (twice the largest event the
    app takes, not its 16 MiB default) stops the inflation and closes with 1009 (message too big)."""

    async def attack() -> int:
        async with websockets.connect(ws(server, "/ws/stream"), compression="deflate", open_timeout=30) as s:
            await asyncio.wait_for(s.recv(), 30)  # the session event
            await s.send(b"\0" * (16 << 20))
            try:
                while True:
                    await asyncio.wait_for(s.recv(), 30)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else -1

    assert asyncio.run(attack()) == 1009
    healthy(server)


# --- settings a server refuses to start with -----------------------------------------------------------
@pytest.mark.parametrize("env,reasons", [
    ({"API_KEYS": "short-key"}, ["key 1 of 1 has 9 characters, fewer than 16"]),
    ({"HOST": "0.0.0.0", "API_KEYS": ""}, ["HOST=0.0.0.0 is not a loopback address and API_KEYS is empty",
                                           "ALLOW_OPEN_BIND=true"]),
])  # fmt: skip
def test_the_server_refuses_to_start(tmp_path, env, reasons):
    """Before it loads a model or listens: a short key, or no keys on an address others can reach."""
    with pytest.raises(RuntimeError, match="server exited") as info:
        with live_server(tmp_path, env=env, startup_timeout=60):
            pass
    assert "server exited with 2" in str(info.value) and "Traceback" not in str(info.value)
    assert all(reason in str(info.value) for reason in reasons) and "short-key" not in str(info.value)


def test_uvicorn_holds_few_unread_messages_per_socket():
    """While a live session waits for room, uvicorn queues what the client keeps sending: at most
    ws_max_queue messages of ws_max_size each, so that product bounds a socket's unread bytes."""
    from shared.api.serving import uvicorn_options
    from shared.core.config import Settings

    options = uvicorn_options(Settings())
    assert options["ws_max_queue"] * options["ws_max_size"] <= 16 << 20
