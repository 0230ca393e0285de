"""`GET /v1/realtime?intent=transcription`: the OpenAI Realtime API's transcription session (GA event
shapes) over the live engine in shared/live/ (README: "OpenAI Realtime (/v1/realtime)").

Client events: `session.update`, `input_audio_buffer.append` (base64 PCM16, 24 kHz by default),
`input_audio_buffer.commit`, `input_audio_buffer.clear`. Audio may come before any `session.update`:
the session starts with the defaults `session.created` shows. The engine's audio settings (format, turn
detection, language, prompt) are fixed once audio has arrived; a later update that changes them is
refused (`session_already_started`). Every bad input is answered with an `error` event and the session
goes on; only the limits (too many streams or opens, idle, session length, too little audio, open too
long, a client that does not read) end it, with their close codes. With `turn_detection: null` the server
commits an utterance that reaches STREAM_MAX_UTTERANCE_S (shared/live/session.py). Appends are taken at
the session's pace (shared/live/intake.py): the receive loop awaits room before it reads the next event.
Deltas carry the engine's stable words only (OpenAI's deltas are append-only): its tentative words, which
the next partial may change, are not sent. A speaker correction (SpeakerUpdate) re-sends the `segment`
event of each item it names, same item_id and segment id, with the new speaker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from shared.api.live_admission import identity_of, open_refused, owner_of
from shared.api.live_ws import (
    AUDIO_TOO_SLOW,
    CLIENT_NOT_READING,
    FRAME_TOO_LARGE,
    IDLE_TIMEOUT,
    INVALID_JSON,
    SESSION_EXPIRED,
    SESSION_TOO_LONG,
    TICK_S,
    TOO_MANY_OPENS,
    brief,
    checked_voices,
    parse_json,
)
from shared.api.realtime_config import Problem, TranscriptionSession, new_id
from shared.core.domain import SAMPLE_RATE
from shared.core.errors import ErrorCode, live_code
from shared.live import events as ev
from shared.live.audio_in import Pcm16Input
from shared.live.intake import EventRate, Intake, Pace
from shared.live.registry import LiveHub, ServerBusy, TooManyStreams
from shared.live.session import LiveSession

log = logging.getLogger(__name__)
router = APIRouter()

JSON_OVERHEAD = 4096  # an append event's bytes beyond its base64 audio
# the segments of this many latest finals are kept, so that a SpeakerUpdate can re-send them with the new speaker
# (an update that names an older item re-sends nothing for it)
KEPT_SEGMENTS = 256

# the error codes of this protocol besides realtime_config's and those shared with live_ws (shared/core/errors.py
# LIVE_CODES, with their close codes; docs/live.md); too_many_streams and server_busy come with the hub's exceptions
INVALID_EVENT = live_code("invalid_event")
UNKNOWN_EVENT_TYPE, UNSUPPORTED_INTENT = live_code("unknown_event_type"), live_code("unsupported_intent")
INVALID_AUDIO = live_code("invalid_audio")
COMMIT_EMPTY, SERVER_ERROR = live_code("input_audio_buffer_commit_empty"), live_code("server_error")


class Realtime:
    """One WebSocket: client events in, the engine's events out as Realtime server events."""

    def __init__(self, websocket: WebSocket, hub: LiveHub, settings):
        self.ws, self.hub, self.settings = websocket, hub, settings
        self.service, self.owner = websocket.app.state.service, owner_of(websocket)
        self.session = TranscriptionSession(settings, lambda options: checked_voices(self.service, options, self.owner))
        self.engine: LiveSession | None = None
        self.input: Pcm16Input | None = None
        # server events (dict) and, last, a close code (int); at most STREAM_MAX_OUTBOX (send)
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.not_reading = False
        self.slot: str | None = None  # the identity whose slot this connection holds
        self.intake = Intake(Pace.from_settings(settings), lambda: self.engine.received if self.engine else 0,
                             lambda: self.engine.pending_finals if self.engine else 0)
        self.rate = EventRate(settings.stream_max_events_per_s)
        self.last_audio = time.monotonic()
        self.ending = False
        # engine item -> item id, and what the translation needs; touched under the engine's lock
        self.items: dict[int, str] = {}
        self.segments: OrderedDict[int, dict] = OrderedDict()  # the last KEPT_SEGMENTS finals' segment events
        self.previous_item: str | None = None
        self.client_commit = False

    # --- engine events -> server events (on the engine's threads, under its lock) ---
    def translate(self, event: ev.Event) -> list[dict]:
        vad = self.session.live.turn_detection
        if isinstance(event, ev.SpeechStarted):
            self.items[event.item] = item_id = new_id("item")
            if not vad:
                return []
            return [{"type": "input_audio_buffer.speech_started", "item_id": item_id,
                     "audio_start_ms": round(event.start * 1000)}]
        if isinstance(event, ev.SpeakerUpdate):
            return self.relabel(event)
        item_id = self.items.get(event.item, "")
        if isinstance(event, ev.SpeechStopped):
            out = []
            if vad and not self.client_commit:
                out.append({"type": "input_audio_buffer.speech_stopped", "item_id": item_id,
                            "audio_end_ms": round(event.end * 1000)})
            previous, self.previous_item = self.previous_item, item_id
            out.append({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
            out.append({"type": "conversation.item.added", "previous_item_id": previous, "item": {
                "id": item_id, "type": "message", "object": "realtime.item", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}})
            return out
        if isinstance(event, ev.PartialWords):
            # deltas are append-only: the stable words only (tentative words could be taken back; not sent)
            if not event.words:
                return []
            return [{"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id,
                     "content_index": 0, "delta": "".join(w.word for w in event.words)}]
        if isinstance(event, ev.FinalUtterance):
            self.items.pop(event.item, None)
            out = []
            if event.speaker is not None and event.text:
                out.append({"type": "conversation.item.input_audio_transcription.segment", "item_id": item_id,
                            "content_index": 0, "id": "seg_" + item_id.removeprefix("item_"), "start": event.start, "end": event.end,
                            "speaker": event.speaker, "text": event.text})
                self.segments[event.item] = out[0]
                while len(self.segments) > KEPT_SEGMENTS:
                    self.segments.popitem(last=False)
            out.append({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                        "content_index": 0, "transcript": event.text,
                        "usage": {"type": "duration", "seconds": round(event.end - event.start, 3)}})
            return out
        if isinstance(event, ev.ItemFailed):
            self.items.pop(event.item, None)
            return [{"type": "conversation.item.input_audio_transcription.failed", "item_id": item_id,
                     "content_index": 0, "error": {"type": "server_error", "code": event.code,
                                                   "message": event.message, "param": None}}]
        return []  # SpeakerFound: the segment events carry the speaker

    def relabel(self, event: ev.SpeakerUpdate) -> list[dict]:
        """A correction of earlier finals' speaker: each one's segment again, with the same item_id and
        segment id and the new speaker (a segment id sent again replaces its earlier segment). Items
        without a segment (no text, no voice), or older than the last KEPT_SEGMENTS finals, get none."""
        out = []
        for item in event.items:
            segment = self.segments.get(item)
            if segment is not None:
                segment = self.segments[item] = {**segment, "speaker": event.speaker}
                out.append(segment)
        return out

    # --- the connection ---
    def send(self, type_: str, **fields) -> None:
        self._enqueue({"type": type_, **fields})

    def _enqueue(self, message: dict) -> None:
        """A server event for the client (on the loop). A client that lets STREAM_MAX_OUTBOX of them pile
        up is not reading: what waits is dropped, and the error and the close go next."""
        if self.not_reading:
            return
        if self.outbox.qsize() >= self.settings.stream_max_outbox:
            self.not_reading = self.ending = True
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.outbox.put_nowait({"type": "error", "error": {
                "type": "invalid_request_error", "code": CLIENT_NOT_READING.code, "param": None, "event_id": None,
                "message": f"over {self.settings.stream_max_outbox} events waited for this client to read them: "
                           "the session is closed"}})
            self.outbox.put_nowait(CLIENT_NOT_READING.close)
            return
        self.outbox.put_nowait(message)

    def error(self, error: ErrorCode, message: str, *, param: str | None = None, event_id: str | None = None,
              kind: str = "invalid_request_error") -> None:
        self.send("error", error={"type": kind, "code": error.code, "message": message, "param": param,
                                  "event_id": event_id})

    async def run(self) -> None:
        self.send("session.created", session=self.session.object())
        tasks = [asyncio.create_task(t) for t in (self._receive(), self._sender(), self._watch())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self.ending:  # the error and the close are queued: let the sender deliver them
                await asyncio.wait_for(asyncio.shield(tasks[1]), 10 if self.not_reading else 30)
        except TimeoutError:
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.engine is not None:  # the client left, or was closed: nothing more is made for it
                await asyncio.to_thread(self.engine.close)

    async def _sender(self) -> None:
        while True:
            message = await self.outbox.get()
            if isinstance(message, int):
                await self.ws.close(message)
                return
            await self.ws.send_text(json.dumps({"event_id": new_id("event"), **message}))

    async def _receive(self) -> None:
        limit = self.settings.stream_max_frame_bytes * 4 // 3 + JSON_OVERHEAD
        while not self.ending:
            await self.intake.wait_room(self.rate.wait_s)  # at most STREAM_MAX_EVENTS_PER_S events a second
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect" or self.ending:
                return
            text, data = message.get("text"), message.get("bytes")
            if text is None:
                text = "" if data is None or len(data) > limit else data.decode("utf-8", "replace")
            if len(text) > limit or (data is not None and len(data) > limit):
                self.error(FRAME_TOO_LARGE, f"an event carries at most {self.settings.stream_max_frame_bytes} bytes "
                           "of audio: send it in smaller appends")
                continue
            try:
                event = parse_json(text)
            except ValueError:
                self.error(INVALID_JSON, "client events must be JSON objects")
                continue
            if not isinstance(event, dict):
                self.error(INVALID_EVENT, "client events must be JSON objects with a type")
                continue
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            try:
                await self._handle(event)
            except Problem as exc:
                self.error(exc.error, exc.message, param=exc.param, event_id=event_id)
            except Exception:
                log.exception("realtime event %r failed", event.get("type"))
                self.error(SERVER_ERROR, "the event could not be handled", event_id=event_id, kind="server_error")

    async def _handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "session.update":
            self.session.update(event.get("session"), started=self.engine is not None)
            self.send("session.updated", session=self.session.object())
        elif kind == "input_audio_buffer.append":
            await self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            if self.engine is None or not await asyncio.to_thread(self._commit):
                raise Problem(COMMIT_EMPTY, "the input audio buffer is empty: append audio "
                              "before committing")
        elif kind == "input_audio_buffer.clear":
            if self.engine is not None:
                await asyncio.to_thread(self._clear)
            self.send("input_audio_buffer.cleared")
        else:
            raise Problem(UNKNOWN_EVENT_TYPE, f"unknown event type {brief(kind)}: this server takes session.update "
                          "and input_audio_buffer.append, .commit and .clear", "type")

    def _commit(self) -> bool:
        self.client_commit = True
        try:
            return self.engine.commit()
        finally:
            self.client_commit = False

    def _clear(self) -> None:
        self.engine.clear()

    async def _append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise Problem(INVALID_AUDIO, "audio must be a base64 string of PCM16 samples", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise Problem(INVALID_AUDIO, "audio is not valid base64", "audio") from None
        if self.engine is None:
            self._start()
        await self.intake.wait_room()  # the session's pace: no more audio (and no next event) before
        await asyncio.to_thread(self.input.write, data)
        self.last_audio = time.monotonic()
        limit = self.settings.stream_max_session_s
        if self.engine.received / SAMPLE_RATE > limit:
            await self._end(SESSION_TOO_LONG, f"the session reached its limit of {limit:g} s of audio")

    def _start(self) -> None:
        loop = asyncio.get_running_loop()

        def emit(event: ev.Event) -> None:
            for message in self.translate(event):
                try:
                    loop.call_soon_threadsafe(self._enqueue, message)
                except RuntimeError:  # the server is shutting down: nobody to tell
                    return

        known = self.service.known_voices(self.session.live.options, self.owner)  # once, as the session starts
        self.engine = LiveSession(self.hub.models, self.session.live, emit, known)
        self.input = Pcm16Input(self.engine.feed, self.session.rate)

    async def _watch(self) -> None:
        """The limits of time: idle, too little audio, open too long."""
        idle, intake = self.settings.stream_idle_s, self.intake
        while not self.ending:
            await asyncio.sleep(min(TICK_S, idle / 4))
            busy = self.engine is not None and self.engine.pending_finals
            if busy or intake.waiting:
                self.last_audio = time.monotonic()  # finals still to come, or the server makes it wait: not idle
            if intake.expired():
                await self._end(SESSION_EXPIRED, f"the session was open {intake.pace.max_wall_s:g} s, its limit")
            elif intake.too_slow():
                await self._end(AUDIO_TOO_SLOW, f"less than {intake.pace.min_rate:g} s of audio a second: "
                                "send audio as it is recorded")
            elif time.monotonic() - self.last_audio > idle:
                await self._end(IDLE_TIMEOUT, f"no audio for {idle:g} s")

    async def _end(self, error: ErrorCode, message: str) -> None:
        """Close the session: the finals of what was heard, then the error and the close."""
        if self.ending:
            return
        self.ending = True
        if self.engine is not None:
            await asyncio.to_thread(self.engine.finish, 120.0)
            await asyncio.sleep(0)  # let the engine's last call_soon_threadsafe land
        self.release()  # its slot is free before the client hears the close
        self.error(error, message)
        if not self.not_reading:
            self.outbox.put_nowait(error.close)

    def release(self) -> None:
        """Give the connection's slot back to the hub (once)."""
        if self.slot is not None:
            self.hub.release(self.slot)
            self.slot = None


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    hub: LiveHub = websocket.app.state.live
    await websocket.accept()
    connection = Realtime(websocket, hub, websocket.app.state.settings)

    async def refuse(error: ErrorCode, message: str) -> None:
        connection.error(error, message)
        connection.outbox.put_nowait(error.close)
        await connection._sender()

    if websocket.query_params.get("intent") != "transcription":
        return await refuse(UNSUPPORTED_INTENT, "this server offers transcription sessions only: connect to "
                            "/v1/realtime?intent=transcription")
    if refused := await open_refused(websocket):
        return await refuse(TOO_MANY_OPENS, refused)
    identity = identity_of(websocket)
    try:
        await asyncio.to_thread(hub.acquire, identity)
    except (TooManyStreams, ServerBusy) as exc:
        return await refuse(exc.code, str(exc))
    connection.slot = identity
    try:
        await connection.run()
    finally:
        connection.release()
