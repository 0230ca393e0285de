"""`GET /ws/stream`: the native live protocol over the engine in shared/live/ (README: "Live streaming").

Binary frames carry audio (PCM16 mono, or one Ogg/WebM Opus stream); text frames carry JSON events.
Every event the engine reports has a sequence number `seq`; a client that lost its connection
reconnects with `session=<id>&last_event=<seq>&offset=<byte it resends from>` and gets every event after
`seq`, while the server skips audio bytes it already had.

Bounded whatever the client sends (docs/security.md): audio is taken at the session's pace
(shared/live/intake.py; the receive loop awaits room before it reads the next frame), at most
STREAM_MAX_OUTBOX events wait for a client that does not read (past it: `client_not_reading`), a
connection sending too little audio or open too long is closed, and every malformed frame gets its error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Literal

from fastapi import APIRouter, WebSocket
from pydantic import Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from shared.api.live_admission import identity_of, open_refused, owner_of
from shared.api.params import TranscribeParams, merge_params
from shared.core.domain import ID_PATTERN, SAMPLE_RATE, TranscribeOptions
from shared.core.errors import ErrorCode, InvalidParameter, ServiceError, VoiceNotFound, live_code
from shared.live import events as ev
from shared.live.intake import EventRate
from shared.live.registry import LiveHub, LiveStream, ResumeRefused, ServerBusy, TooManyStreams
from shared.live.session import LiveConfig

log = logging.getLogger(__name__)
router = APIRouter()

# the error codes this protocol sends (shared/core/errors.py LIVE_CODES, with their close codes; docs/live.md);
# too_many_streams, server_busy and session_not_found come with the hub's exceptions. 1000 is a normal end
# after "end". realtime.py sends the shared ones it imports from here.
INVALID_OPTION, AUDIO_UNDECODABLE = live_code("invalid_option"), live_code("audio_undecodable")
INVALID_JSON, UNKNOWN_EVENT = live_code("invalid_json"), live_code("unknown_event")
FRAME_TOO_LARGE, INVALID_OFFSET = live_code("frame_too_large"), live_code("invalid_offset")
IDLE_TIMEOUT, SESSION_TOO_LONG = live_code("idle_timeout"), live_code("session_too_long")
TOO_MANY_OPENS, SESSION_EXPIRED = live_code("too_many_opens"), live_code("session_expired")
AUDIO_TOO_SLOW, CLIENT_NOT_READING = live_code("audio_too_slow"), live_code("client_not_reading")
TICK_S = 1.0  # how often a connection checks its limits


class StreamParams(TranscribeParams):
    """Query parameters of /ws/stream: the transcription options of /api/transcribe, and these."""

    format: Literal["pcm16", "webm", "ogg"] = Field("pcm16", description="binary frames: PCM16 mono, or Opus")
    rate: int = Field(SAMPLE_RATE, ge=8000, le=48000, description="pcm16 sample rate")
    partials: bool = Field(True, description="send partial words of the open utterance")
    session: str | None = Field(None, pattern=ID_PATTERN, description="resume this session")
    last_event: int = Field(0, ge=0, description="resume: the last event seq received")
    offset: int | None = Field(None, ge=0, description="resume: the input byte the client resends from")


def event_json(seq: int, event: ev.Event) -> dict:
    base = {"seq": seq}
    if isinstance(event, ev.SpeechStarted):
        return {"type": "speech_started", **base, "utterance": event.item, "start": event.start}
    if isinstance(event, ev.SpeechStopped):
        return {"type": "speech_stopped", **base, "utterance": event.item, "end": event.end}
    if isinstance(event, ev.PartialWords):  # text/words: newly stable; tentative: replaces the last tentative
        return {"type": "partial", **base, "utterance": event.item, "text": "".join(w.word for w in event.words),
                "words": [_word(w) for w in event.words],
                "tentative": "".join(w.word for w in event.tentative),
                "tentative_words": [_word(w) for w in event.tentative]}
    if isinstance(event, ev.SpeakerFound):
        named = {"speaker_id": event.speaker_id, "label": event.label} if event.speaker_id else {}
        return {"type": "speaker", **base, "speaker": event.speaker, "utterance": event.item, **named}
    if isinstance(event, ev.FinalUtterance):
        return {"type": "final", **base, "utterance": event.item, "start": event.start, "end": event.end,
                "speaker": event.speaker, "speaker_id": event.speaker_id,
                "speaker_confidence": event.speaker_confidence, "text": event.text, "language": event.language,
                "words": [_word(w, event.speaker) for w in event.words]}
    if isinstance(event, ev.SpeakerUpdate):
        return {"type": "speaker_update", **base, "utterances": list(event.items), "speaker": event.speaker,
                "previous": event.previous, "speaker_id": event.speaker_id,
                "speaker_confidence": event.speaker_confidence}
    if isinstance(event, ev.ItemFailed):
        return {"type": "error", **base, "utterance": event.item, "code": event.code, "message": event.message}
    raise TypeError(f"unknown live event {event!r}")


def _word(w, speaker: str | None = None) -> dict:
    out = {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
    return out | {"speaker": speaker} if speaker else out


def brief(value) -> str:
    """A client's value in an error message: its repr, cut short (it may be huge or deeply nested)."""
    try:
        text = repr(value)
    except RecursionError:
        text = "a deeply nested value"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_json(text: str):
    """json.loads, with every way it refuses a text as ValueError (deep nesting raises RecursionError;
    an integer of over 4300 digits, ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


async def send_error(websocket: WebSocket, error: ErrorCode, message: str) -> None:
    """The `error` event; a fatal code's close follows it."""
    await websocket.send_json({"type": "error", "code": error.code, "message": message})
    if error.close is not None:
        await websocket.close(error.close)


@router.websocket("/ws/stream")
async def ws_stream(websocket: WebSocket) -> None:
    hub: LiveHub = websocket.app.state.live
    settings = websocket.app.state.settings
    await websocket.accept()
    try:
        params = merge_params(StreamParams, websocket.query_params, {})
        options = params.options()
    except InvalidParameter as exc:
        return await send_error(websocket, INVALID_OPTION, exc.message)
    if refused := await open_refused(websocket):
        return await send_error(websocket, TOO_MANY_OPENS, refused)
    identity = identity_of(websocket)
    known = []
    if not params.session:
        try:  # the voices are the caller's (owner_of), resolved once, here
            options, known = await asyncio.to_thread(checked_voices, websocket.app.state.service, options,
                                                     owner_of(websocket))
        except ServiceError as exc:
            return await send_error(websocket, INVALID_OPTION, exc.message)
    try:
        if params.session:  # a resumed stream has its slot already
            stream = hub.resume(params.session, identity)
        else:
            config = LiveConfig.from_settings(settings, options, partials=params.partials)
            stream = await asyncio.to_thread(hub.open, config, identity, params.format, params.rate, known)
    except (ResumeRefused, TooManyStreams, ServerBusy) as exc:
        return await send_error(websocket, exc.code, str(exc))
    await Connection(websocket, stream, hub, settings).run(params)


def checked_voices(service, options: TranscribeOptions, owner: str):
    """The options checked (each voice one of the owner's: InvalidVoiceId, VoiceNotFound) and the
    enrolled voices they name speakers with."""
    try:
        options = service.check_options(options, owner)
    except VoiceNotFound as exc:
        raise VoiceNotFound(f"voices: {exc.message} among your enrolled voices (another key's are not yours)") from None
    return options, service.known_voices(options, owner)


class Connection:
    """One WebSocket attached to a live stream: frames in, events out, heartbeats, limits."""

    def __init__(self, websocket: WebSocket, stream: LiveStream, hub: LiveHub, settings):
        self.ws, self.stream, self.hub, self.settings = websocket, stream, hub, settings
        self.outbox: asyncio.Queue = asyncio.Queue()  # at most STREAM_MAX_OUTBOX (_enqueue)
        self.last_audio = time.monotonic()
        self.ended = False
        self.not_reading = asyncio.Event()  # the outbox overflowed: the client does not read
        self.rate = EventRate(settings.stream_max_events_per_s)
        self._sending = asyncio.Lock()  # acks, events and heartbeats come from three tasks

    async def _json(self, message: dict) -> None:
        async with self._sending:
            await self.ws.send_json(message)

    async def _error(self, error: ErrorCode, message: str) -> None:
        async with self._sending:
            await send_error(self.ws, error, message)

    def _enqueue(self, item) -> None:
        """An engine event for the client (on the loop). A client that lets STREAM_MAX_OUTBOX of them
        pile up is not reading: what waits is dropped and the connection is closed."""
        if self.not_reading.is_set():
            return
        if self.outbox.qsize() >= self.settings.stream_max_outbox:
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.not_reading.set()
            return
        self.outbox.put_nowait(item)

    @property
    def taken_over(self) -> bool:
        """A resume attached another connection to this stream."""
        return self.stream.listener is not self.listener

    async def run(self, params: StreamParams) -> None:
        loop = asyncio.get_running_loop()

        def listener(seq: int, event) -> None:
            try:
                loop.call_soon_threadsafe(self._enqueue, (seq, event))
            except RuntimeError:  # the server is shutting down: nobody to tell
                pass

        backlog = self.stream.attach(listener, after=params.last_event)
        self.listener = listener
        await self._json({
            "type": "session", "session_id": self.stream.id, "resumed": bool(params.session),
            "offset": self.stream.bytes_in, "last_event": self.stream.seq, "sample_rate": SAMPLE_RATE,
            "heartbeat_s": self.settings.heartbeat_s,
        })
        for seq, event in backlog:
            await self._json(event_json(seq, event))
        tasks = [asyncio.create_task(t) for t in
                 (self._receive(params.offset), self._send(), self._beat(), self.not_reading.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.not_reading.is_set() and not self.ended:
                self.ended = True
                await self._refuse_reader()
            if self.ended:
                await asyncio.to_thread(self.stream.abandon)  # nothing more is made for it
                self.hub.end(self.stream)
            elif not self.taken_over:
                self.hub.park(self.stream)  # dropped: keep it for a resume

    async def _refuse_reader(self) -> None:
        """The error and the close for a client that does not read, as far as its socket takes them."""
        limit = self.settings.stream_max_outbox
        try:
            await asyncio.wait_for(self._error(CLIENT_NOT_READING, f"over {limit} events waited for this client "
                                               "to read them: the session is closed"), 10)
        except Exception:  # noqa: BLE001 - a socket that takes nothing more: closed as the handler returns
            pass

    async def _receive(self, offset: int | None) -> None:
        """Frames in. `position`: the stream byte the next frame starts at (a resumed client resends
        from `offset`; what the server already had is skipped)."""
        limit = self.settings.stream_max_frame_bytes
        position = self.stream.bytes_in if offset is None else offset
        while True:
            await self.stream.intake.wait_room(self.stream.wait_s)  # the session's pace: read no frame before
            await self.stream.intake.wait_room(self.rate.wait_s)  # nor more than STREAM_MAX_EVENTS_PER_S
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect" or self.taken_over:
                return
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                if len(data) > limit:
                    await self._error(FRAME_TOO_LARGE, f"binary frames carry at most {limit} bytes")
                    continue
                try:
                    received = await asyncio.to_thread(self.stream.write, data, position)
                except ValueError as exc:
                    await self._error(INVALID_OFFSET, str(exc))
                    continue
                position += len(data)
                self.last_audio = time.monotonic()
                samples = self.stream.session.received
                await self._json({"type": "ack", "bytes": received, "samples": samples})
                if samples / SAMPLE_RATE > self.settings.stream_max_session_s:
                    await self._end(SESSION_TOO_LONG,
                                    f"the session reached its limit of {self.settings.stream_max_session_s:g} s")
                    return
            elif text is not None:
                if await self._control(text):
                    return

    async def _control(self, text: str) -> bool:
        """A client text frame; True when the connection is done."""
        if len(text) > self.settings.stream_max_frame_bytes:
            await self._error(FRAME_TOO_LARGE, "text frames carry at most a small JSON event")
            return False
        try:
            message = parse_json(text)
        except ValueError:
            await self._error(INVALID_JSON, "text frames must be JSON objects")
            return False
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "heartbeat":
            return False
        if kind == "commit":
            await asyncio.to_thread(self.stream.session.commit)
            return False
        if kind == "end":
            await self._end()
            return True
        await self._error(UNKNOWN_EVENT, f"unknown event type {brief(kind)}: send heartbeat, commit or end")
        return False

    async def _end(self, error: ErrorCode | None = None, message: str = "") -> None:
        """Finish the session: its last finals, then `done` and the close 1000 (or the error and its close)."""
        if self.ended:
            return
        self.ended = True
        await asyncio.to_thread(self.stream.finish, 120.0)
        await asyncio.sleep(0)  # let the listener's last call_soon_threadsafe land
        self.hub.end(self.stream)  # its slot is free before the client hears the end
        await self._flush()
        if error is not None:
            await self._error(error, message)
        else:
            async with self._sending:
                await self.ws.send_json({"type": "done", "last_event": self.stream.seq})
                await self.ws.close(1000)

    async def _flush(self) -> None:
        while not self.outbox.empty():
            await self._deliver(*self.outbox.get_nowait())

    async def _send(self) -> None:
        while True:
            seq, event = await self.outbox.get()
            if not await self._deliver(seq, event):
                return

    async def _deliver(self, seq: int, event) -> bool:
        if self.ws.application_state != WebSocketState.CONNECTED:
            return False
        if event is None:  # the decoder gave up on the stream
            self.ended = True
            await self._error(AUDIO_UNDECODABLE, self.stream.decode_error or "undecodable audio")
            return False
        await self._json(event_json(seq, event))
        return True

    async def _beat(self) -> None:
        """Heartbeats, and the limits of time: idle, too little audio, open too long, taken over."""
        settings, intake = self.settings, self.stream.intake
        beat_at = time.monotonic() + settings.heartbeat_s
        while True:
            await asyncio.sleep(min(TICK_S, settings.heartbeat_s, settings.stream_idle_s / 4))
            now = time.monotonic()
            if self.taken_over:
                return
            if intake.waiting:  # the server is making the client wait: it is not idle
                self.last_audio = now
            if intake.expired():
                return await self._end(SESSION_EXPIRED, f"the session was open {intake.pace.max_wall_s:g} s, "
                                       "its limit")
            if intake.too_slow():
                return await self._end(AUDIO_TOO_SLOW, f"less than {intake.pace.min_rate:g} s of audio a second: "
                                       "send audio as it is recorded")
            if now - self.last_audio > settings.stream_idle_s:
                return await self._end(IDLE_TIMEOUT, f"no audio for {settings.stream_idle_s:g} s")
            if now >= beat_at:
                beat_at = now + settings.heartbeat_s
                await self._json({"type": "heartbeat", "samples": self.stream.session.received})
