"""A client of the native `/ws/stream` protocol (websockets): sends audio paced like a live source,
collects events, and resumes after a dropped connection. The CLI's `whospoke stream`, the streaming
bench and the tests use it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from shared.core.errors import LIVE_CODES

BYTES_PER_S = 32_000  # PCM16 mono at 16 kHz


@dataclass
class Received:
    event: dict
    at: float  # wall seconds since the stream started
    sent_s: float  # audio seconds sent when it arrived (PCM16 input)


@dataclass
class StreamRun:
    session_id: str = ""
    events: list[Received] = field(default_factory=list)
    reconnects: int = 0
    acked: int = 0
    last_seq: int = 0
    started: float = field(default_factory=time.monotonic)
    sent_bytes: int = 0

    def of(self, kind: str) -> list[dict]:
        return [r.event for r in self.events if r.event.get("type") == kind]

    @property
    def finals(self) -> list[dict]:
        return sorted(self.of("final"), key=lambda e: e["utterance"])

    def transcript(self) -> str:
        return " ".join(e["text"] for e in self.finals if e["text"]).strip()


class StreamClient:
    """Streams `data` (PCM16 16 kHz mono bytes, or an Ogg/WebM file's bytes with fmt "webm"/"ogg") to
    `url` (ws://host:port/ws/stream), `speed` times real time (0: as fast as the socket takes it)."""

    def __init__(self, url: str, *, params: dict | None = None, api_key: str | None = None, speed: float = 1.0,
                 frame_s: float = 0.5, fmt: str = "pcm16", bytes_per_s: int = BYTES_PER_S,
                 on_event: Callable[[Received], None] | None = None):
        self.url, self.params, self.api_key = url, dict(params or {}), api_key
        self.speed, self.fmt = speed, fmt
        self.frame = max(2, int(frame_s * bytes_per_s) // 2 * 2)
        self.bytes_per_s = bytes_per_s
        self.on_event = on_event

    async def run(self, data: bytes, *, drop_at_bytes: int | None = None, timeout: float = 600.0) -> StreamRun:
        run = StreamRun()
        offset = 0
        while True:
            query = {"format": self.fmt, **self.params}
            if run.session_id:
                query |= {"session": run.session_id, "last_event": run.last_seq, "offset": offset}
            dropped = await asyncio.wait_for(self._connection(run, data, query, offset, drop_at_bytes), timeout)
            if not dropped:
                return run
            drop_at_bytes = None  # one drop per run
            run.reconnects += 1
            offset = run.acked  # resend everything the server had not confirmed

    async def _connection(self, run: StreamRun, data: bytes, query: dict, offset: int,
                          drop_at: int | None) -> bool:
        """One WebSocket connection; True if it was dropped on purpose (at `drop_at` bytes)."""
        import websockets

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with websockets.connect(f"{self.url}?{urlencode(query)}", additional_headers=headers,
                                      max_size=None, ping_interval=10) as ws:
            hello = json.loads(await ws.recv())
            if hello.get("type") == "error":
                raise StreamError(hello["code"], hello["message"])
            run.session_id = hello["session_id"]
            done = asyncio.Event()
            reader = asyncio.create_task(self._read(ws, run, done))
            try:
                for start in range(offset, len(data), self.frame):
                    if drop_at is not None and start >= drop_at:
                        ws.transport.abort()  # as a network failure: no close handshake
                        await asyncio.gather(reader, return_exceptions=True)
                        return True
                    if reader.done():
                        break
                    piece = data[start : start + self.frame]
                    await ws.send(piece)
                    run.sent_bytes = max(run.sent_bytes, start + len(piece))
                    if self.speed > 0:
                        await self._pace(run, start + len(piece))
                if not reader.done():
                    await ws.send(json.dumps({"type": "end"}))
                await reader
            finally:
                reader.cancel()
        return False

    async def _pace(self, run: StreamRun, sent: int) -> None:
        due = run.started + sent / self.bytes_per_s / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _read(self, ws, run: StreamRun, done: asyncio.Event) -> None:
        import websockets

        try:
            async for message in ws:
                event = json.loads(message)
                kind = event.get("type")
                if kind == "ack":
                    run.acked = max(run.acked, event["bytes"])
                    continue
                seq = event.get("seq")
                if seq is not None:
                    if seq <= run.last_seq:
                        continue  # a replay of what this client already has
                    run.last_seq = seq
                received = Received(event, time.monotonic() - run.started, run.sent_bytes / self.bytes_per_s)
                run.events.append(received)
                if self.on_event is not None:
                    self.on_event(received)
                if kind == "error" and seq is None and event.get("code") in FATAL:
                    raise StreamError(event["code"], event["message"])
                if kind == "done":
                    return
        except websockets.ConnectionClosed:
            return


FATAL = {e.code for e in LIVE_CODES.values() if e.fatal}  # the server closes after them: no resume


class StreamError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
