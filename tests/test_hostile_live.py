"""Hostile live clients against a real server on loopback (real `websockets` clients, the bundled models):
each attack of issue 20 on the WebSocket endpoints runs for a few seconds and gets its documented answer
(an error code and close code, or back-pressure at the documented pace), and /healthz answers after it.
The limits are set small here so each attack shows within seconds; docs/security.md says what they
promise. The bounds' parts on their own: tests/test_live_bounds.py."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave

import numpy as np
import pytest
import websockets
from audio_fixtures import TWO_SPEAKERS, encode_as, load_audio
from live_server import live_server

pytestmark = pytest.mark.slow

PACED = {  # 5 s utterances; 5 s of lead, then 2x real time; 100 events for a client that does not read
    "STREAM_MAX_UTTERANCE_S": "5", "STREAM_MAX_LEAD_S": "5", "STREAM_MAX_SPEED": "2", "STREAM_MAX_OUTBOX": "100",
    "STREAM_MIN_AUDIO_RATE": "0", "STREAM_MAX_EVENTS_PER_S": "1000000",  # (the frame rate: TRICKLE's test)
}
TRICKLE = {  # half of real time, after 2 s; 50 frames a second
    "STREAM_MIN_AUDIO_RATE": "0.5", "STREAM_RATE_GRACE_S": "2", "STREAM_MAX_EVENTS_PER_S": "50",
}
KEYS = ["hostile-key-one-0001", "hostile-key-two-0002", "hostile-key-three-03"]
SLOTS = {  # one stream per key, two in all, four opens a minute per key, sessions of 3 s wall clock
    "API_KEYS": ",".join(KEYS), "STREAM_MAX_PER_KEY": "1", "STREAM_MAX_TOTAL": "2", "STREAM_OPENS_PER_MIN": "4",
    "STREAM_MAX_WALL_S": "3", "STREAM_MIN_AUDIO_RATE": "0", "STREAM_RESUME_S": "30",
}


@pytest.fixture(scope="module")
def paced(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("paced"), env=PACED) as server:
        yield server


@pytest.fixture(scope="module")
def trickle(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("trickle"), env=TRICKLE) as server:
        yield server


@pytest.fixture(scope="module")
def slots(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("slots"), env=SLOTS) as server:
        yield server


def ws(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def healthy(server) -> bool:
    with server.client(timeout=10) as client:
        return client.get("/healthz").status_code == 200


def rss_mb(server) -> float:
    for line in open(f"/proc/{server.process.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def read_all(socket, into: list, timeout: float = 30) -> int | None:
    """Events until the close (or `timeout` s of silence); returns the close code."""
    try:
        while True:
            into.append(json.loads(await asyncio.wait_for(socket.recv(), timeout)))
    except websockets.ConnectionClosed:
        return socket.close_code
    except TimeoutError:
        return None


def errors(events: list) -> list[str]:
    return [e["error"]["code"] if "error" in e else e["code"] for e in events if e["type"] == "error"]


# --- 1. /v1/realtime with turn_detection null, appended faster than real time ---

def test_manual_mode_is_committed_at_the_utterance_cap_and_read_at_the_pace(paced):
    rss_before = rss_mb(paced)
    second = b64(np.zeros(24000, "<i2").tobytes())  # 1 s at 24 kHz

    async def attack():
        events: list = []
        async with websockets.connect(ws(paced, "/v1/realtime?intent=transcription"), max_size=None) as socket:
            reader = asyncio.create_task(read_all(socket, events))
            await socket.send(json.dumps({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {"turn_detection": None}}}}))
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < 4:  # as fast as the socket takes it
                try:
                    await asyncio.wait_for(socket.send(json.dumps({"type": "input_audio_buffer.append",
                                                                   "audio": second})), 0.5)
                    sent += 1
                except TimeoutError:
                    break  # the server reads no more for now: back-pressure
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.0)
            committed = sum(e["type"] == "input_audio_buffer.committed" for e in events)
            reader.cancel()
            return events, sent, elapsed, committed

    events, sent, elapsed, committed = asyncio.run(attack())
    assert committed >= 1  # the server committed at 5 s: the client never did
    # 5 s of lead, then 2x real time (and 1 s of slack): not what was sent as fast as the socket took it
    assert committed * 5 <= 5 + 2 * (elapsed + 1.0) + 1.0, (committed, sent, elapsed)
    assert sent > committed * 5 + 5  # it did send faster than that
    assert not errors(events)
    assert rss_mb(paced) - rss_before < 300
    assert healthy(paced)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- 2. an Opus stream flooded in as fast as the socket takes it ---

def long_webm(tmp_path, repeat: int = 5):
    pcm = (np.tile(load_audio(TWO_SPEAKERS), repeat) * 32767).astype("<i2").tobytes()
    with wave.open(str(tmp_path / "long.wav"), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(pcm)
    return encode_as(tmp_path / "long.wav", "webm", tmp_path / "long.webm").read_bytes()


def test_opus_flood_is_read_at_the_pace_and_not_buffered(paced, tmp_path):
    data = long_webm(tmp_path)  # ~140 s of Opus
    rss_before = rss_mb(paced)

    async def attack():
        events: list = []
        async with websockets.connect(ws(paced, "/ws/stream?format=webm&diarize=false"), max_size=None) as socket:
            events.append(json.loads(await socket.recv()))
            reader = asyncio.create_task(read_all(socket, events))
            started, at = time.monotonic(), 0
            while at < len(data) and time.monotonic() - started < 4:
                try:
                    await asyncio.wait_for(socket.send(data[at : at + 16384]), 0.5)
                    at += 16384
                except TimeoutError:
                    pass  # the server reads no more for now
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.5)
            reader.cancel()
            return events, elapsed, at

    events, elapsed, sent = asyncio.run(attack())
    acks = [e for e in events if e["type"] == "ack"]
    samples = max(a["samples"] for a in acks)
    assert samples / 16000 <= 5 + 2 * (elapsed + 0.5) + 2  # decoded at the pace, whatever was sent
    assert max(a["bytes"] for a in acks) < len(data)  # not all of it was taken
    assert not errors(events)
    assert rss_mb(paced) - rss_before < 300
    assert healthy(paced)


# --- 4. a client that floods events and never reads the answers ---

def test_client_that_does_not_read_is_closed_with_its_code(paced):
    async def attack():
        socket = await websockets.connect(ws(paced, "/v1/realtime?intent=transcription"), max_size=None,
                                          max_queue=1)
        started, sent = time.monotonic(), 0
        while sent < 100_000 and time.monotonic() - started < 6:  # invalid events: each answered with an error
            try:
                await asyncio.wait_for(socket.send("x"), 0.5)
                sent += 1
            except (TimeoutError, websockets.ConnectionClosed):
                break  # the server stopped reading
        events: list = []
        code = await read_all(socket, events, timeout=10)
        return events, code, sent

    events, code, sent = asyncio.run(attack())
    assert errors(events)[-1] == "client_not_reading" and code == 4408, (errors(events)[-3:], code, sent)
    assert len(events) < sent  # what waited for it was dropped, not kept
    assert healthy(paced)


# --- 5. a trickle of bytes, and malformed frames ---

def test_trickle_of_audio_is_closed_as_too_slow(trickle):
    async def attack(path: str, piece):
        events: list = []
        async with websockets.connect(ws(trickle, path), max_size=None) as socket:
            reader = asyncio.create_task(read_all(socket, events))
            for _ in range(40):  # a little every 0.25 s: never idle, far under half of real time
                try:
                    await socket.send(piece)
                except websockets.ConnectionClosed:
                    break
                await asyncio.sleep(0.25)
            return events, await reader

    events, code = asyncio.run(attack("/ws/stream", b"\0\0"))
    assert errors(events) == ["audio_too_slow"] and code == 4408
    append = json.dumps({"type": "input_audio_buffer.append", "audio": b64(b"\0" * 480)})  # 10 ms
    events, code = asyncio.run(attack("/v1/realtime?intent=transcription", append))
    assert errors(events) == ["audio_too_slow"] and code == 4408
    assert healthy(trickle)


def test_a_flood_of_frames_is_read_at_the_frame_rate(trickle):
    async def attack():
        events: list = []
        async with websockets.connect(ws(trickle, "/v1/realtime?intent=transcription"), max_size=None) as socket:
            reader = asyncio.create_task(read_all(socket, events))
            started, sent = time.monotonic(), 0
            while time.monotonic() - started < 2:
                try:  # invalid events as fast as they go: every one the server reads is answered
                    await asyncio.wait_for(socket.send("x"), 0.5)
                    sent += 1
                except TimeoutError:
                    pass
            await asyncio.sleep(0.5)
            elapsed, answered = time.monotonic() - started, errors(events).count("invalid_json")
            reader.cancel()
            socket.transport.abort()  # no close handshake behind tens of thousands of unread frames
            return answered, sent, elapsed

    answered, sent, elapsed = asyncio.run(attack())
    assert 0 < answered <= 50 + 50 * elapsed + 10 < sent, (answered, sent, elapsed)  # a burst, then 50 a second
    assert healthy(trickle)


DEEP = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError
HUGE = '{"type": ' + "9" * 5000 + "}"  # json.loads: ValueError (over 4300 digits)


def test_malformed_frames_get_their_codes_and_the_session_goes_on(paced):
    async def native():
        events: list = []
        async with websockets.connect(ws(paced, "/ws/stream"), max_size=None) as socket:
            for frame in [DEEP, HUGE, b"\0" * (2 << 20), json.dumps({"type": [[[]]] * 100_000}),
                          json.dumps({"type": "end"})]:
                await socket.send(frame)
            code = await read_all(socket, events)
        return events, code

    events, code = asyncio.run(native())
    assert errors(events) == ["invalid_json", "invalid_json", "frame_too_large", "unknown_event"]
    assert events[-1]["type"] == "done" and code == 1000

    nested: object = {}
    for _ in range(900):
        nested = {"a": nested}

    async def realtime():
        events: list = []
        async with websockets.connect(ws(paced, "/v1/realtime?intent=transcription"), max_size=None) as socket:
            for frame in [DEEP, HUGE, b"{" * (2 << 20), json.dumps({"type": "session.update", "session": nested}),
                          json.dumps({"type": "session.update", "session": {"type": "transcription"}})]:
                await socket.send(frame)
            reader = asyncio.create_task(read_all(socket, events, timeout=5))
            while not any(e["type"] == "session.updated" for e in events) and not reader.done():
                await asyncio.sleep(0.1)
            reader.cancel()
        return events

    events = asyncio.run(realtime())
    codes = errors(events)
    assert codes[:3] == ["invalid_json", "invalid_json", "frame_too_large"]
    assert codes[3] in {"invalid_json", "invalid_session_config"} and len(codes) == 4
    assert events[-1]["type"] == "session.updated"  # and the session goes on
    assert healthy(paced)


# --- 3. parked streams, the total, opens a minute; and the wall clock ---

def test_parked_streams_count_and_the_server_caps_streams_and_opens(slots):
    def url(key: str, query: str = "") -> tuple[str, dict]:
        return ws(slots, "/ws/stream" + query), {"Authorization": f"Bearer {key}"}

    async def first_event(key: str, query: str = "") -> tuple[dict, int | None]:
        """Open, read the first event, and end the stream if it opened."""
        address, headers = url(key, query)
        async with websockets.connect(address, additional_headers=headers) as socket:
            event = json.loads(await socket.recv())
            if event["type"] != "error":
                await socket.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(read_all(socket, []), 30)
            return event, socket.close_code

    async def scenario():
        address, headers = url(KEYS[0])
        dropped = await websockets.connect(address, additional_headers=headers)  # open 1 of key 0
        session = json.loads(await dropped.recv())["session_id"]
        dropped.transport.abort()  # a network failure: the stream is parked for its resume
        await asyncio.sleep(0.5)
        refused, refused_code = await first_event(KEYS[0])  # open 2: the parked stream holds key 0's slot
        address, headers = url(KEYS[0], f"?session={session}")
        resumed = await websockets.connect(address, additional_headers=headers)  # open 3: a resume takes no slot
        hello = json.loads(await resumed.recv())
        other = await websockets.connect(url(KEYS[1])[0], additional_headers=url(KEYS[1])[1])  # the 2nd in all
        await other.recv()
        busy, busy_code = await first_event(KEYS[2])  # a 3rd in all
        await other.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(other.wait_closed(), 30)
        await resumed.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(resumed.wait_closed(), 30)
        fourth, _ = await first_event(KEYS[0])  # open 4 of key 0 in this minute: its slot is free again
        fifth, fifth_code = await first_event(KEYS[0])  # open 5: over the opens a minute
        return refused, refused_code, hello, busy, busy_code, fourth, fifth, fifth_code

    refused, refused_code, hello, busy, busy_code, fourth, fifth, fifth_code = asyncio.run(scenario())
    assert refused["code"] == "too_many_streams" and refused_code == 4429
    assert hello["type"] == "session" and hello["resumed"] is True
    assert busy["code"] == "server_busy" and busy_code == 4429
    assert fourth["type"] == "session", fourth
    assert fifth["code"] == "too_many_opens" and fifth_code == 4429
    assert healthy(slots)


def test_a_session_open_past_the_wall_clock_limit_is_closed(slots):
    async def live():
        events: list = []
        headers = {"Authorization": f"Bearer {KEYS[2]}"}
        async with websockets.connect(ws(slots, "/ws/stream?diarize=false"), additional_headers=headers) as socket:
            reader = asyncio.create_task(read_all(socket, events))
            for _ in range(60):  # 100 ms of silence every 100 ms: a live client, for up to 6 s
                try:
                    await socket.send(b"\0" * 3200)
                except websockets.ConnectionClosed:
                    break
                await asyncio.sleep(0.1)
            return events, await reader

    events, code = asyncio.run(live())
    assert errors(events) == ["session_expired"] and code == 4408
    assert healthy(slots)
