"""Streaming results: one JSON line per segment as soon as it is final (NDJSON), or Server-Sent Events.

    {"type": "start", "clip_id", "duration"}
    {"type": "heartbeat", "progress": {"done", "total"}}     after HEARTBEAT_S without another line
    {"type": "segment", "index", "speaker", "speaker_id", "speaker_confidence", "start", "end", "text"[, "words"]}
    {"type": "done", "language", "duration", "speakers", "segments"}
    {"type": "error", "error": {"code", "message"}}          instead of "done" if the work fails

The pipeline runs on its own thread and hands segments to the response through an asyncio queue. When
the client goes away its CancelToken is cancelled: the run stops at once if it waits on a stage, else at
the next segment or batch boundary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from shared.api.clips import get_service, owner
from shared.api.params import transcribe_options
from shared.core.domain import ClipInfo, TranscribeOptions
from shared.core.errors import ServiceError, error_code
from shared.pipeline.cancel import Cancelled, CancelToken
from shared.service.transcription import TranscriptionService

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["streaming"])

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
INTERNAL_ERROR = error_code("internal_error")  # what the work failed with, when not a ServiceError


@router.post(
    "/transcribe/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}, SSE: {}}, "description": "one event per line (NDJSON) or SSE"}},
)
async def transcribe_stream(
    request: Request,
    clip_id: str = Query(..., description="a stored clip (POST /api/audio)"),
    options: TranscribeOptions = Depends(transcribe_options),
    service: TranscriptionService = Depends(get_service),
    caller: str = Depends(owner),
) -> StreamingResponse:
    """Transcribe a stored clip of the caller's and stream each segment as soon as it is final. NDJSON by
    default; Server-Sent Events when the request accepts text/event-stream."""
    clip = service.clip(clip_id, caller)  # the store checks the id
    options = service.check_options(options, caller)
    heartbeat_s = request.app.state.settings.heartbeat_s
    events = transcript_events(service, clip, options, heartbeat_s, owner=caller)
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    if SSE in request.headers.get("accept", ""):
        return StreamingResponse(_sse(events), media_type=SSE, headers=headers)
    return StreamingResponse(_ndjson(events), media_type=NDJSON, headers=headers)


async def _ndjson(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    async for event in events:
        yield json.dumps(event, separators=(",", ":")) + "\n"


async def _sse(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    async for event in events:
        yield f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


async def transcript_events(
    service: TranscriptionService, clip: ClipInfo, options: TranscribeOptions, heartbeat_s: float, *, owner: str = ""
) -> AsyncIterator[dict]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict] = asyncio.Queue()
    gone = CancelToken()  # cancelled when the client goes: the run stops at once (shared/pipeline/cancel.py)
    progress = {"done": 0.0, "total": clip.duration}

    def put(event: dict) -> None:
        gone.check()
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the event loop closed under us (server shutting down)
            gone.cancel("server stopping")
            gone.check()

    def on_progress(done: float, total: float) -> None:
        progress.update(done=round(done, 3), total=round(total, 3))

    def work() -> None:
        try:
            run = service.start(service.clip_audio(clip.clip_id), options, on_progress, cancel=gone, owner=owner)
            count = 0
            for segment in run:
                line = segment.model_dump(exclude={"words"} if segment.words is None else None)
                put({"type": "segment", "index": count, **line})
                count += 1
            put({
                "type": "done", "language": run.language, "duration": round(run.duration, 3),
                "speakers": run.speakers, "segments": count,
            })  # fmt: skip
        except Cancelled:
            log.info("stream of clip %s: client gone, stopped", clip.clip_id)
        except ServiceError as exc:
            _try(put, {"type": "error", "error": {"code": exc.code, "message": exc.message}})
        except Exception:  # noqa: BLE001 - reported in the stream; the status line is long gone
            log.exception("stream of clip %s failed", clip.clip_id)
            _try(put, {"type": "error", "error": {"code": INTERNAL_ERROR.code, "message": "the transcription failed"}})

    yield {"type": "start", "clip_id": clip.clip_id, "duration": clip.duration}
    thread = threading.Thread(target=work, name=f"stream-{clip.clip_id[:8]}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=heartbeat_s)
            except TimeoutError:
                if not thread.is_alive() and queue.empty():  # it died without a word: never hang the client
                    yield {"type": "error", "error": {"code": INTERNAL_ERROR.code, "message": "the transcription stopped"}}
                    return
                yield {"type": "heartbeat", "progress": dict(progress)}
                continue
            yield event
            if event["type"] in ("done", "error"):
                return
    finally:
        gone.cancel("client gone")


def _try(put, event: dict) -> None:
    try:
        put(event)
    except Cancelled:
        pass
