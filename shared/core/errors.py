"""Errors the service reports to clients: one JSON shape {"error": {"code", "message"}}, stable codes.

CODES is the one registry of the codes an HTTP response can carry, each with its status and what it
means; the error handlers (shared/api/error_responses.py), the OpenAPI document (shared/api/openapi.py)
and tests read it. A ServiceError subclass names its code and takes the status from here, so a class
with an unregistered code (or one that contradicts its entry) fails at import.

LIVE_CODES is the same for the `error` events of the WebSocket protocols (`/ws/stream`, `/v1/realtime`):
each code with the close code that follows it (None: the session goes on). The protocol modules look
their codes up at import (`live_code`), so an unregistered one fails there; the page gets the fatal ones
from `/web/config`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    description: str
    generic: bool = False  # the code of any other error of this status (an unknown route, a bad method...)


CODES: dict[str, ErrorCode] = {e.code: e for e in (
    ErrorCode("bad_request", 400, "a malformed request (an unreadable form body, ...)", generic=True),
    ErrorCode("invalid_clip_id", 400, "the clip id is not 32 lowercase hex characters"),
    ErrorCode("invalid_job_id", 400, "the job id is not 32 lowercase hex characters"),
    ErrorCode("empty_file", 400, "the upload has no bytes"),
    ErrorCode("unauthorized", 401, "an API key is required, or the one sent is not valid", generic=True),
    ErrorCode("forbidden", 403, "not allowed", generic=True),
    ErrorCode("not_found", 404, "unknown route", generic=True),
    ErrorCode("clip_not_found", 404, "no clip with that id (or it was deleted)"),
    ErrorCode("job_not_found", 404, "no job with that id (or it expired)"),
    ErrorCode("model_not_found", 404, "/v1: not a model this server lists"),
    ErrorCode("method_not_allowed", 405, "the route does not take that method", generic=True),
    ErrorCode("job_state_conflict", 409, "the job is not in a state that allows this"),
    ErrorCode("job_finished", 409, "cancel: the job has already ended"),
    ErrorCode("job_not_finished", 409, "result: the job has not succeeded yet"),
    ErrorCode("job_failed", 409, "result: the job failed; the message says why"),
    ErrorCode("file_too_large", 413, "the body exceeds MAX_UPLOAD_MB", generic=True),
    ErrorCode("audio_too_long", 413, "the audio runs past MAX_AUDIO_S"),
    ErrorCode("unsupported_media", 415, "the file is not decodable audio", generic=True),
    ErrorCode("invalid_parameter", 422, "a bad query or form value", generic=True),
    ErrorCode("conflicting_parameter", 422, "an option given as a query parameter and a form field, differently"),
    ErrorCode("unsupported_language", 422, "a language Whisper does not know, or not English on an English-only model"),
    ErrorCode("invalid_speaker_names", 422, "speaker_names is not a JSON object of usable names"),
    ErrorCode("invalid_webhook_url", 422, "webhook_url is not a public http(s) URL"),
    ErrorCode("webhooks_disabled", 422, "a webhook_url, but no WEBHOOK_SECRET to sign with"),
    ErrorCode("rate_limited", 429, "over RATE_LIMIT_PER_MIN; Retry-After says when to come back", generic=True),
    ErrorCode("too_many_auth_failures", 429, "too many wrong API keys from this address; Retry-After"),
    ErrorCode("internal_error", 500, "a bug on our side (logged); the server keeps serving"),
    ErrorCode("page_unavailable", 503, "the browser page's files are not installed; the API works"),
    ErrorCode("storage_busy", 503, "Modal: the clip storage is busy; try again"),
    ErrorCode("http_error", 0, "any other HTTP error (status 0 here: it is the response's)"),
)}  # fmt: skip

# the code of an HTTP error raised without one (Starlette's 404 and 405, a body too large...)
HTTP_CODES: dict[int, str] = {e.status: e.code for e in CODES.values() if e.generic}
FALLBACK_CODE = "http_error"


def http_code(status: int) -> str:
    return HTTP_CODES.get(status, FALLBACK_CODE)


@dataclass(frozen=True)
class LiveErrorCode:
    code: str
    close: int | None  # the WebSocket close code sent after it; None: the session goes on
    description: str

    @property
    def fatal(self) -> bool:
        """The server closes the stream after it: a reconnect cannot help."""
        return self.close is not None


LIVE_CODES: dict[str, LiveErrorCode] = {e.code: e for e in (
    # both protocols
    LiveErrorCode("invalid_json", None, "a text frame (event) that is not JSON"),
    LiveErrorCode("frame_too_large", None, "a frame over STREAM_MAX_FRAME_BYTES: dropped"),
    LiveErrorCode("transcription_failed", None, "an utterance's final could not be made"),
    LiveErrorCode("idle_timeout", 4408, "no audio for STREAM_IDLE_S"),
    LiveErrorCode("session_too_long", 4413, "more than STREAM_MAX_SESSION_S of audio"),
    LiveErrorCode("too_many_streams", 4429, "more than STREAM_MAX_PER_KEY live streams for one key or address"),
    # /ws/stream
    LiveErrorCode("unknown_event", None, "a text frame of another type than heartbeat, commit or end"),
    LiveErrorCode("invalid_offset", None, "a resumed client resends from past what the server has"),
    LiveErrorCode("invalid_option", 4400, "a bad query parameter"),
    LiveErrorCode("session_not_found", 4404, "resume of an unknown or expired session (or another key's)"),
    LiveErrorCode("audio_undecodable", 4415, "format=webm/ogg bytes PyAV cannot read"),
    # /v1/realtime
    LiveErrorCode("invalid_event", None, "a client event that is not a JSON object"),
    LiveErrorCode("unknown_event_type", None, "a client event of a type this server does not take"),
    LiveErrorCode("invalid_audio", None, "append: audio missing, not a string, or not base64"),
    LiveErrorCode("input_audio_buffer_commit_empty", None, "commit with nothing appended since the last utterance"),
    LiveErrorCode("invalid_session_config", None, "session.update: a bad field"),
    LiveErrorCode("unsupported_session_type", None, "session.update: a type other than transcription"),
    LiveErrorCode("unsupported_audio_format", None, "session.update: an audio format or rate not supported"),
    LiveErrorCode("unsupported_turn_detection", None, "session.update: turn detection other than server_vad"),
    LiveErrorCode("unsupported_language", None, "session.update: a language the model cannot do"),
    LiveErrorCode("session_already_started", None, "session.update changes what is fixed once audio arrived"),
    LiveErrorCode("server_error", None, "an event the server failed on (logged)"),
    LiveErrorCode("unsupported_intent", 4400, "no intent=transcription in the URL"),
)}  # fmt: skip


def live_code(code: str) -> LiveErrorCode:
    """The registered live error code (a KeyError for an unregistered one: call it at import)."""
    return LIVE_CODES[code]


class ServiceError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        entry = CODES.get(cls.code)
        if entry is None:
            raise TypeError(f"{cls.__name__}: error code {cls.code!r} is not in shared.core.errors.CODES")
        if "status" in cls.__dict__ and cls.status != entry.status:
            raise TypeError(f"{cls.__name__}: status {cls.status} contradicts CODES[{cls.code!r}] ({entry.status})")
        cls.status = entry.status

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
            self.status = CODES[code].status if code in CODES else self.status
        if status:
            self.status = status

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidParameter(ServiceError):
    code = "invalid_parameter"


class ConflictingParameter(InvalidParameter):
    code = "conflicting_parameter"


class InvalidSpeakerNames(InvalidParameter):
    code = "invalid_speaker_names"


class InvalidClipId(ServiceError):
    code = "invalid_clip_id"


class ClipNotFound(ServiceError):
    code = "clip_not_found"


class EmptyFile(ServiceError):
    code = "empty_file"


class UnsupportedMedia(ServiceError):
    code = "unsupported_media"


class FileTooLarge(ServiceError):
    code = "file_too_large"


class AudioTooLong(ServiceError):
    code = "audio_too_long"


class UnsupportedLanguage(ServiceError):
    code = "unsupported_language"


class InvalidJobId(ServiceError):
    code = "invalid_job_id"


class JobNotFound(ServiceError):
    code = "job_not_found"


class JobConflict(ServiceError):
    """The job is not in a state that allows the request (cancel a finished job, read an unfinished result)."""

    code = "job_state_conflict"


class InvalidWebhookUrl(ServiceError):
    code = "invalid_webhook_url"


class WebhooksDisabled(ServiceError):
    code = "webhooks_disabled"


class ModelNotFound(ServiceError):
    code = "model_not_found"


class PageUnavailable(ServiceError):
    code = "page_unavailable"
