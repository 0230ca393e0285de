"""The attacks of `make bench-abuse` (local_dev/bench/abuse.py), the attacker's side: each runs for its
seconds against a server on loopback, with bounded concurrency and bounded memory (payloads built once,
websockets' own bounded write buffers and receive queues, nothing kept per message), and counts what the
server answered: close codes, error codes, refused handshakes.

It runs in its own process, so the attacker's CPU does not stall the bench's clocks (the honest session,
the /healthz probe): `python -m local_dev.bench.abuse_attacks NAME --url http://127.0.0.1:PORT --seconds N`
(the key in $BENCH_ABUSE_KEY) prints `ready` once its payload (local_dev/bench/abuse_payloads.py) is built
and the attack starts, then one JSON line of counts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from local_dev.bench.abuse_payloads import build_payload


def event_code(text: str) -> str | None:
    """The error code of a server event of either protocol (`/ws/stream`: {"type": "error", "code"};
    `/v1/realtime`: {"type": "error", "error": {"code"}}), None for any other event."""
    try:
        event = json.loads(text)
    except ValueError:
        return "(not JSON)"
    if not isinstance(event, dict) or event.get("type") != "error":
        return None
    inner = event.get("error")
    return str(event.get("code") or (inner.get("code") if isinstance(inner, dict) else None) or "(no code)")


def close_code(exc: ConnectionClosed | None, ws=None) -> str:
    frame = exc.rcvd if exc is not None else getattr(getattr(ws, "protocol", None), "close_rcvd", None)
    return f"close {frame.code}" if frame is not None else "closed without a close frame"


class Attack:
    """One attack's clock, its target and its counts: `answers` (what the server did) and `sent` (what
    the attacker did). Each worker loops until the deadline; run() cancels the stragglers."""

    def __init__(self, url: str, key: str | None, seconds: float, concurrency: int):
        self.url, self.key, self.seconds, self.concurrency = url.rstrip("/"), key, seconds, concurrency
        self.answers: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.deadline = 0.0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    async def run(self, worker: Callable[[Attack], Awaitable[None]], workers: int) -> None:
        self.deadline = time.monotonic() + self.seconds
        tasks = [asyncio.create_task(self._loop(worker)) for _ in range(workers)]
        await asyncio.wait(tasks, timeout=self.seconds + 5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, worker) -> None:
        while not self.over():
            try:
                await asyncio.wait_for(worker(self), max(0.1, self.deadline - time.monotonic()))
            except TimeoutError:
                return
            except (OSError, ConnectionClosed) as exc:
                self.answers[f"connection lost: {type(exc).__name__}"] += 1
            except Exception as exc:  # noqa: BLE001 - shown in the report, and the attack goes on
                self.answers[f"attacker error: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.05)  # between two rounds: bounded, whatever the server answers

    async def connect(self, path: str, *, compression: str | None = None):
        """A WebSocket to `path`, or None when the handshake was refused (counted)."""
        try:
            ws = await websockets.connect(self.url.replace("http", "ws", 1) + path, additional_headers=self.headers,
                                          compression=compression, max_size=1 << 20, max_queue=16, proxy=None,
                                          open_timeout=10, close_timeout=2, ping_interval=None)
        except InvalidStatus as exc:
            self.answers[f"handshake {exc.response.status_code}"] += 1
            await asyncio.sleep(0.05)
            return None
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            self.answers[f"connect failed: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
            return None
        self.sent["connections"] += 1
        return ws

    async def opened(self, ws) -> bool:
        """Reads the first event: True when it opened a session, False when it was a refusal (counted)."""
        try:
            first = await asyncio.wait_for(ws.recv(), 10)
        except (ConnectionClosed, TimeoutError) as exc:
            self.answers[close_code(exc if isinstance(exc, ConnectionClosed) else None, ws)] += 1
            return False
        code = event_code(first) if isinstance(first, str) else None
        if code is not None:
            self.answers[f"error {code}"] += 1
            await self.finish(ws)
            return False
        self.sent["sessions opened"] += 1
        return True

    async def read(self, ws) -> None:
        """Counts the server's error events until the connection closes, then its close code."""
        try:
            async for message in ws:
                if isinstance(message, str) and (code := event_code(message)) is not None:
                    self.answers[f"error {code}"] += 1
        except ConnectionClosed as exc:
            self.answers[close_code(exc)] += 1
            return
        self.answers[close_code(None, ws)] += 1

    async def finish(self, ws, reader: asyncio.Task | None = None) -> None:
        """Waits for the server's close (its code counted by `reader`, or here) until the deadline, then
        closes from this side."""
        try:
            if reader is not None:
                await asyncio.wait_for(asyncio.shield(reader), max(0.0, self.deadline - time.monotonic()))
            else:
                await asyncio.wait_for(ws.wait_closed(), 2)
                self.answers[close_code(None, ws)] += 1
        except (TimeoutError, asyncio.CancelledError):
            pass
        finally:
            if reader is not None:
                reader.cancel()
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001 - a socket already gone
                ws.transport.abort()


# --- the attacks (each: one worker's one round; Attack.run loops it) -------------------------------------

REALTIME = "/v1/realtime?intent=transcription"
MANUAL = json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 24_000}, "turn_detection": None}}}})


async def _flood(a: Attack, path: str, frames: Iterable, label: str, first: str | None = None) -> None:
    """On one new connection: `first` (not counted), then `frames` as fast as they go, reading the server's
    answers, until it closes the connection or the time is up."""
    if (ws := await a.connect(path)) is None or not await a.opened(ws):
        return
    reader = asyncio.create_task(a.read(ws))
    try:
        if first is not None:
            await ws.send(first)
        for frame in frames:
            if reader.done() or a.over():
                break
            await ws.send(frame)
            a.sent[label] += 1
    except ConnectionClosed:
        pass
    await a.finish(ws, reader)


def realtime_manual(payload: dict) -> Callable:
    """Manual turns (`turn_detection: null`), 1 s appends of 24 kHz speech as fast as they go, no commit."""
    async def worker(a: Attack) -> None:
        await _flood(a, REALTIME, itertools.cycle(payload.get("appends", ())), "appends (1 s of audio)", first=MANUAL)
    return worker


def webm_flood(payload: dict) -> Callable:
    """One long Opus/WebM stream per connection in 256 KiB frames at network speed, then the next."""
    async def worker(a: Attack) -> None:
        if (ws := await a.connect("/ws/stream?format=webm")) is None or not await a.opened(ws):
            return
        reader = asyncio.create_task(a.read(ws))
        data, step = payload["webm"], 256 * 1024
        try:
            for at in range(0, len(data), step):
                if reader.done() or a.over():
                    break
                await ws.send(data[at : at + step])
                a.sent["bytes of WebM"] += len(data[at : at + step])
            else:
                await ws.send(json.dumps({"type": "end"}))
                a.sent["whole streams"] += 1
        except ConnectionClosed:
            pass
        await a.finish(ws, reader)
    return worker


def parked_churn(payload: dict) -> Callable:
    """Open a session, send 1 s of audio, drop the TCP connection without a close: a parked stream."""
    async def worker(a: Attack) -> None:
        if (ws := await a.connect("/ws/stream")) is None:
            return
        if not await a.opened(ws):
            await asyncio.sleep(0.05)
            return
        try:
            await ws.send(payload["second"])
        except ConnectionClosed as exc:
            a.answers[close_code(exc)] += 1
        ws.transport.abort()
        a.sent["sessions dropped"] += 1
    return worker


INVALID = ["x", "{}", "[1]", '{"type":"nope"}', '{"type":"input_audio_buffer.append","audio":5}', '{"type":1}']


def invalid_flood(payload: dict) -> Callable:
    """Small invalid events on /v1/realtime as fast as they go, never reading an answer (the first event,
    session.created or a refusal, aside)."""
    async def worker(a: Attack) -> None:
        if (ws := await a.connect(REALTIME)) is None or not await a.opened(ws):
            return
        try:
            for n, event in enumerate(itertools.cycle(INVALID)):
                if a.over():
                    break
                await ws.send(event)
                a.sent["invalid events"] += 1
                if n % 500 == 0:
                    await asyncio.sleep(0)  # the other workers' turn
        except ConnectionClosed as exc:
            a.answers[close_code(exc)] += 1
        ws.transport.abort()
    return worker


TRICKLE_S = 3.0


def trickle(payload: dict) -> Callable:
    """A session holding its slot with a 1-byte frame every TRICKLE_S seconds."""
    async def worker(a: Attack) -> None:
        if (ws := await a.connect("/ws/stream")) is None or not await a.opened(ws):
            await asyncio.sleep(TRICKLE_S)
            return
        reader = asyncio.create_task(a.read(ws))
        try:
            while not reader.done() and not a.over():
                await ws.send(b"\0")
                a.sent["1-byte frames"] += 1
                await asyncio.wait({reader}, timeout=TRICKLE_S)
        except ConnectionClosed:
            pass
        await a.finish(ws, reader)
    return worker


NESTED = "[" * 200_000 + "]" * 200_000  # 400 KB, under the 1 MiB frame limit


def nested_json(payload: dict) -> Callable:
    """Text frames of JSON nested 200,000 deep on /ws/stream, as fast as they go."""
    async def worker(a: Attack) -> None:
        await _flood(a, "/ws/stream", itertools.repeat(NESTED), "nested frames")
    return worker


def deflate_bomb(payload: dict) -> Callable:
    """One 16 MiB message of zeros, compressed by permessage-deflate, per connection."""
    async def worker(a: Attack) -> None:
        if (ws := await a.connect("/ws/stream", compression="deflate")) is None or not await a.opened(ws):
            return
        extensions = getattr(getattr(ws, "protocol", None), "extensions", None) or []
        a.sent["deflate negotiated" if extensions else "deflate refused (sent plain)"] += 1
        reader = asyncio.create_task(a.read(ws))
        try:
            await ws.send(payload["bomb"])
            a.sent["16 MiB messages"] += 1
        except ConnectionClosed:
            pass
        await asyncio.wait({reader}, timeout=5)
        await a.finish(ws, reader)
    return worker


def sync_disconnect(payload: dict) -> Callable:
    """POST /api/transcribe of a long clip, hanging up right after the request; one in ten waits up to
    1 s for the status line to see what the server answers."""
    host, port = urlsplit(payload["url"]).hostname, urlsplit(payload["url"]).port
    auth = f"Authorization: Bearer {payload['key']}\r\n" if payload.get("key") else ""
    request = (f"POST /api/transcribe?clip_id={payload['clip_id']} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
               "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()

    async def worker(a: Attack) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        a.sent["requests"] += 1
        if a.sent["requests"] % 10 == 0:
            try:
                line = await asyncio.wait_for(reader.readline(), 1)
            except TimeoutError:
                line = b""
                a.answers["no answer within 1 s"] += 1
            else:
                a.answers[f"http {line.split()[1].decode()}" if line.count(b" ") >= 2 else "empty answer"] += 1
            if not line.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")):
                a.sent["sampled requests taken"] += 1
        writer.transport.abort()
        await asyncio.sleep(0.25)
    return worker


# name -> (worker factory, concurrent workers)
ATTACKS: dict[str, tuple[Callable, int]] = {
    "realtime-manual": (realtime_manual, 4), "webm-flood": (webm_flood, 4), "parked-churn": (parked_churn, 4),
    "invalid-flood": (invalid_flood, 4), "trickle": (trickle, 40), "nested-json": (nested_json, 4),
    "deflate-bomb": (deflate_bomb, 2), "sync-disconnect": (sync_disconnect, 8),
}


async def attack(name: str, url: str, key: str | None, seconds: float, concurrency: int | None = None) -> dict:
    factory, workers = ATTACKS[name]
    payload = build_payload(name, url, key)
    a = Attack(url, key, seconds, concurrency or workers)
    print("ready", flush=True)
    started = time.monotonic()
    await a.run(factory(payload), a.concurrency)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"attack": name, "seconds": round(time.monotonic() - started, 1), "concurrency": a.concurrency,
            "answers": dict(a.answers), "sent": dict(a.sent), "attacker_peak_mb": round(peak_mb)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(ATTACKS))
    parser.add_argument("--url", required=True, help="the server, http://127.0.0.1:PORT")
    parser.add_argument("--key", default=os.environ.get("BENCH_ABUSE_KEY") or None,
                        help="the attacker's API key (default: $BENCH_ABUSE_KEY, kept out of process lists)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=None, help="workers (default: the attack's own)")
    args = parser.parse_args(argv)
    result = asyncio.run(attack(args.name, args.url, args.key, args.seconds, args.concurrency))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
