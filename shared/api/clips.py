"""The seed's API: upload, inspect and delete clips; transcribe a stored clip.

Clips belong to the caller that uploaded them (`owner`): with API keys on, the key's id; with keys off,
everyone is the one local user (owner ""; a client's address is never an owner, a laptop's changes).
Another owner's clip is answered as a missing one (404 clip_not_found), so ids cannot be probed.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shared.api.auth import IDENTITY
from shared.api.cancel_on_disconnect import run_until_disconnected
from shared.api.params import output_format, transcribe_options
from shared.api.uploads import MULTIPART_FILE_SCHEMA, receive_upload
from shared.core.domain import ClipInfo, OutputFormat, TranscribeOptions, Transcript
from shared.service.formats import MEDIA_TYPES, render
from shared.service.transcription import TranscriptionService

router = APIRouter(prefix="/api", tags=["audio"])


def get_service(request: Request) -> TranscriptionService:
    return request.app.state.service


def owner(request: Request) -> str:
    """Who owns what this request stores, and may see it: the API key's id ("key:<digest>", set by the
    auth middleware), or "" when keys are off (the identity is then "addr:<ip>": not an owner)."""
    identity = request.scope.get(IDENTITY) or ""
    return identity if identity.startswith("key:") else ""


class ClipUploaded(ClipInfo):
    message: str


class ClipDeleted(BaseModel):
    clip_id: str
    message: str


@router.post("/audio", status_code=201, response_model=ClipUploaded, openapi_extra=MULTIPART_FILE_SCHEMA)
async def upload_audio(
    request: Request, service: TranscriptionService = Depends(get_service), caller: str = Depends(owner)
) -> ClipUploaded:
    """Upload an audio file (multipart field `file`: wav, mp3, flac, ogg/opus, m4a/aac, webm...). It is
    kept for CLIP_TTL_S and counts against the caller's STORAGE_QUOTA_MB."""
    upload = await receive_upload(request, service.clips)
    info = await run_in_threadpool(
        service.add_clip, upload.path, filename=upload.filename, content_type=upload.content_type, owner=caller
    )
    return ClipUploaded(**info.public().model_dump(), message="Audio uploaded successfully")


@router.get("/audio/{clip_id}", response_model=ClipInfo)
def get_audio(
    clip_id: str, service: TranscriptionService = Depends(get_service), caller: str = Depends(owner)
) -> ClipInfo:
    return service.clip(clip_id, caller).public()  # the store checks the id (shared/media/clip_store.py _path)


@router.delete("/audio/{clip_id}", response_model=ClipDeleted)
def delete_audio(
    clip_id: str, service: TranscriptionService = Depends(get_service), caller: str = Depends(owner)
) -> ClipDeleted:
    service.delete_clip(clip_id, caller)
    return ClipDeleted(clip_id=clip_id, message="Audio deleted")


def transcript_response(transcript: Transcript, fmt: OutputFormat, options: TranscribeOptions) -> Response:
    body = render(transcript, fmt, include_words=options.word_timestamps)
    if fmt is OutputFormat.json:
        return Response(body, media_type="application/json")
    return Response(body, media_type=f"{MEDIA_TYPES[fmt]}; charset=utf-8")


@router.post(
    "/transcribe",
    response_model=Transcript,
    responses={200: {"content": {t: {} for t in ("application/x-subrip", "text/vtt", "text/plain")}}},
)
async def transcribe(
    request: Request,
    clip_id: str,
    options: TranscribeOptions = Depends(transcribe_options),
    fmt: OutputFormat = Depends(output_format),
    service: TranscriptionService = Depends(get_service),
    caller: str = Depends(owner),
) -> Response:
    """Transcribe (and, unless diarize=false, diarize) a stored clip of the caller's; answers when done.
    A client that disconnects first stops the work (shared/api/cancel_on_disconnect.py)."""
    service.clip(clip_id, caller)
    options = service.check_options(options, caller)  # the options' one check; the service trusts them
    transcript = await run_until_disconnected(
        request, lambda cancel: service.transcribe_clip(clip_id, options, cancel=cancel, owner=caller)
    )
    return transcript_response(transcript, fmt, options)
