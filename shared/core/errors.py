"""Errors the service reports to clients: one JSON shape {"error": {"code", "message"}}, stable codes."""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidParameter(ServiceError):
    status, code = 422, "invalid_parameter"


class InvalidClipId(ServiceError):
    status, code = 400, "invalid_clip_id"


class ClipNotFound(ServiceError):
    status, code = 404, "clip_not_found"


class EmptyFile(ServiceError):
    status, code = 400, "empty_file"


class UnsupportedMedia(ServiceError):
    status, code = 415, "unsupported_media"


class FileTooLarge(ServiceError):
    status, code = 413, "file_too_large"


class AudioTooLong(ServiceError):
    status, code = 413, "audio_too_long"


class UnsupportedLanguage(ServiceError):
    status, code = 422, "unsupported_language"
