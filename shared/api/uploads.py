"""Receiving uploads: a size limit enforced while the body streams in, and multipart parsing into the
clip store's incoming folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.error_responses import error_response
from shared.core.errors import FileTooLarge, InvalidParameter
from shared.media.clip_store import ClipStore

UPLOAD_FIELD = "file"

MULTIPART_FILE_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


class BodySizeLimit:
    """Refuses request bodies over `max_bytes`: at once when Content-Length says so, else as soon as
    the streamed body passes the limit (a chunked upload cannot sneak past)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, FileTooLarge.code, _too_large(limit))
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise FileTooLarge(_too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _copy_to(source, path: Path) -> None:
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, length=1 << 20)


def _too_large(limit: int) -> str:
    return f"the upload exceeds the limit of {limit / (1024 * 1024):g} MB (MAX_UPLOAD_MB)"


@dataclass
class ReceivedUpload:
    path: Path
    filename: str | None
    content_type: str | None
    fields: dict[str, str]


async def receive_upload(request: Request, store: ClipStore, *, required: bool = True) -> ReceivedUpload | None:
    """Parse a multipart body; stage the `file` part in the store's incoming folder."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if required:
            raise InvalidParameter("send the audio as multipart/form-data with a 'file' field")
        return None
    async with request.form(max_files=1, max_fields=50) as form:
        upload = form.get(UPLOAD_FIELD)
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        if not isinstance(upload, UploadFile):
            if required:
                raise InvalidParameter(f"multipart field '{UPLOAD_FIELD}' with the audio file is missing")
            return ReceivedUpload(path=None, filename=None, content_type=None, fields=fields)  # type: ignore[arg-type]
        return ReceivedUpload(await stage_upload(upload, store), upload.filename, upload.content_type, fields)


async def stage_upload(upload: UploadFile, store: ClipStore) -> Path:
    """The file part copied into the store's incoming folder (nothing left there if the copy fails)."""
    staged = store.incoming_file()
    try:
        await upload.seek(0)
        await run_in_threadpool(_copy_to, upload.file, staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged
