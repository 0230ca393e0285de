"""Errors the service reports to clients: one JSON shape {"error": {"code", "message"}}, stable codes.

CODES is the one registry of error codes: every code the service sends, once, with what it means and
how it is sent. `status`: the HTTP status it is answered with (None: never an HTTP answer). `live`: it
is an `error` event of the WebSocket protocols (`/ws/stream`, `/v1/realtime`), with `close`, the close
code that follows it (None: the session goes on). A code can be both (unsupported_language). The error
handlers (shared/api/error_responses.py), the OpenAPI document (shared/api/openapi.py), the live
protocols, the job runner and the page (via `/web/config`) read it; docs/api.md and docs/live.md
document it (tests/test_error_codes.py checks all of that).

A ServiceError subclass names its code and takes the status from here, so a class with an unregistered
code (or one that contradicts its entry) fails at import; the live protocols and the job runner look
their codes up at import (`live_code`, `error_code`), so an unregistered one fails there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int | None  # the HTTP status (0: the failed response's own); None: never an HTTP answer
    description: str
    generic: bool = False  # the code of any other error of this status (an unknown route, a bad method...)
    live: bool = False  # an `error` event of the WebSocket protocols
    close: int | None = None  # live: the WebSocket close code sent after it; None: the session goes on

    @property
    def fatal(self) -> bool:
        """The server closes the stream after it: a reconnect cannot help."""
        return self.close is not None


def _live(code: str, description: str, close: int | None = None) -> ErrorCode:
    return ErrorCode(code, None, description, live=True, close=close)


_TABLE = (
    # HTTP answers (/api, /v1, /metrics, the page)
    ErrorCode("bad_request", 400, "a malformed request (an unreadable form body, ...)", generic=True),
    ErrorCode("invalid_clip_id", 400, "the clip id is not 32 lowercase hex characters"),
    ErrorCode("invalid_job_id", 400, "the job id is not 32 lowercase hex characters"),
    ErrorCode("invalid_voice_id", 400, "a voice id is not 32 lowercase hex characters"),
    ErrorCode("empty_file", 400, "the upload has no bytes"),
    ErrorCode("invalid_host", 400, "the Host header is not one the server answers (ALLOWED_HOSTS)"),
    ErrorCode("unauthorized", 401, "an API key is required, or the one sent is not valid", generic=True),
    ErrorCode("forbidden", 403, "not allowed", generic=True),
    ErrorCode("origin_not_allowed", 403, "a page of another origin (ALLOWED_ORIGINS) opened a WebSocket or sent a POST"),
    ErrorCode("webhook_secret_shared", 403, "GET /api/webhooks/secret: WEBHOOK_SECRET_PER_KEY is off; one secret, "
              "the operator's, signs every webhook"),
    ErrorCode("not_found", 404, "unknown route", generic=True),
    ErrorCode("clip_not_found", 404, "no clip with that id (or it was deleted)"),
    ErrorCode("job_not_found", 404, "no job with that id (or it expired)"),
    ErrorCode("voice_not_found", 404, "no voice with that id among the caller's (or it was deleted)"),
    ErrorCode("model_not_found", 404, "/v1: not a model this server lists"),
    ErrorCode("method_not_allowed", 405, "the route does not take that method", generic=True),
    ErrorCode("job_state_conflict", 409, "the job is not in a state that allows this"),
    ErrorCode("job_finished", 409, "cancel: the job has already ended"),
    ErrorCode("job_not_finished", 409, "result: the job has not succeeded yet"),
    ErrorCode("job_failed", 409, "result: the job failed; the message says why"),
    ErrorCode("voice_name_taken", 409, "the caller already has a voice of that name"),
    ErrorCode("too_many_voices", 409, "the caller has VOICES_MAX_PER_OWNER voices: delete one first"),
    ErrorCode("file_too_large", 413, "the body exceeds MAX_UPLOAD_MB", generic=True),
    ErrorCode("audio_too_long", 413, "the audio runs past MAX_AUDIO_S"),
    ErrorCode("storage_quota_exceeded", 413, "the caller's stored clips would pass STORAGE_QUOTA_MB"),
    ErrorCode("unsupported_media", 415, "the file is not decodable audio", generic=True),
    ErrorCode("invalid_parameter", 422, "a bad query or form value", generic=True),
    ErrorCode("conflicting_parameter", 422, "an option given as a query parameter and a form field, differently"),
    ErrorCode("unsupported_language", 422, "a language Whisper does not know, or not English on an English-only model",
              live=True),  # also refuses a /v1/realtime session.update
    ErrorCode("invalid_speaker_names", 422, "speaker_names is not a JSON object of usable names"),
    ErrorCode("invalid_voice_name", 422, "a voice name a format cannot carry: 1-64 printable characters, none "
              "of < > & [ ], not SPEAKER_nn"),
    ErrorCode("invalid_voice_sample", 422, "an enrolment sample that cannot be read: a span outside the clip, "
              "an unreadable data URL, too many samples"),
    ErrorCode("too_little_speech", 422, "an enrolment sample with under VOICE_MIN_SPEECH_S of speech"),
    ErrorCode("several_voices", 422, "an enrolment sample in which the diarizer hears more than one voice"),
    ErrorCode("invalid_webhook_url", 422, "webhook_url is not a public http(s) URL"),
    ErrorCode("webhooks_disabled", 422, "a webhook_url, but no WEBHOOK_SECRET to sign with"),
    ErrorCode("rate_limited", 429, "over RATE_LIMIT_PER_MIN; Retry-After says when to come back", generic=True),
    ErrorCode("too_many_auth_failures", 429, "too many wrong API keys from this address; Retry-After"),
    ErrorCode("client_disconnected", 499, "the client went away before the answer; its transcription was stopped "
              "(seen in the logs and metrics only)"),
    ErrorCode("internal_error", 500, "a bug on our side (logged); the server keeps serving"),
    ErrorCode("page_unavailable", 503, "the browser page's files are not installed; the API works"),
    ErrorCode("storage_busy", 503, "Modal: the clip storage is busy; try again"),
    ErrorCode("http_error", 0, "any other HTTP error (status 0 here: it is the response's)"),
    # a failed job's error only (besides the codes above that a transcription raises)
    ErrorCode("interrupted", None, "a job whose runs kept dying (JOB_MAX_ATTEMPTS) is failed with it"),
    # the live protocols, both
    _live("invalid_json", "a text frame (event) that is not JSON"),
    _live("frame_too_large", "a frame over STREAM_MAX_FRAME_BYTES: dropped"),
    _live("transcription_failed", "an utterance's final could not be made"),
    _live("idle_timeout", "no audio for STREAM_IDLE_S", close=4408),
    _live("session_too_long", "more than STREAM_MAX_SESSION_S of audio", close=4413),
    _live("too_many_streams", "more than STREAM_MAX_PER_KEY live streams for one key or address", close=4429),
    _live("too_many_opens", "more than STREAM_OPENS_PER_MIN live WebSocket opens a minute for one key or address",
          close=4429),
    _live("server_busy", "STREAM_MAX_TOTAL live streams are open on the server", close=4429),
    _live("session_expired", "the session was open STREAM_MAX_WALL_S", close=4408),
    _live("audio_too_slow", "less audio than STREAM_MIN_AUDIO_RATE of real time, after STREAM_RATE_GRACE_S", close=4408),
    _live("client_not_reading", "STREAM_MAX_OUTBOX server events wait for a client that does not read them",
          close=4408),
    # /ws/stream
    _live("unknown_event", "a text frame of another type than heartbeat, commit or end"),
    _live("invalid_offset", "a resumed client resends from past what the server has"),
    _live("invalid_option", "a bad query parameter", close=4400),
    _live("session_not_found", "resume of an unknown or expired session (or another key's)", close=4404),
    _live("audio_undecodable", "format=webm/ogg bytes PyAV cannot read", close=4415),
    # /v1/realtime
    _live("invalid_event", "a client event that is not a JSON object"),
    _live("unknown_event_type", "a client event of a type this server does not take"),
    _live("invalid_audio", "append: audio missing, not a string, or not base64"),
    _live("input_audio_buffer_commit_empty", "commit with nothing appended since the last utterance"),
    _live("invalid_session_config", "session.update: a bad field"),
    _live("unsupported_session_type", "session.update: a type other than transcription"),
    _live("unsupported_audio_format", "session.update: an audio format or rate not supported"),
    _live("unsupported_turn_detection", "session.update: turn detection other than server_vad"),
    _live("session_already_started", "session.update changes what is fixed once audio arrived"),
    _live("server_error", "an event the server failed on (logged)"),
    _live("unsupported_intent", "no intent=transcription in the URL", close=4400),
)  # fmt: skip
CODES: dict[str, ErrorCode] = {e.code: e for e in _TABLE}
if len(CODES) != len(_TABLE):  # one definition per code
    raise ValueError(f"registered twice: {sorted(c for c in CODES if [e.code for e in _TABLE].count(c) > 1)}")

HTTP_ERRORS: dict[str, ErrorCode] = {c: e for c, e in CODES.items() if e.status is not None}  # the OpenAPI enum
LIVE_CODES: dict[str, ErrorCode] = {c: e for c, e in CODES.items() if e.live}

# the code of an HTTP error raised without one (Starlette's 404 and 405, a body too large...)
HTTP_CODES: dict[int, str] = {e.status: e.code for e in CODES.values() if e.generic}
FALLBACK_CODE = "http_error"


def http_code(status: int) -> str:
    return HTTP_CODES.get(status, FALLBACK_CODE)


def error_code(code: str) -> ErrorCode:
    """The registered code (a KeyError for an unregistered one: call it at import)."""
    return CODES[code]


def live_code(code: str) -> ErrorCode:
    """The registered live error code (a KeyError for an unregistered one or one the live protocols do not
    send: call it at import)."""
    entry = CODES[code]
    if not entry.live:
        raise KeyError(f"{code!r} is not a live error code")
    return entry


class ServiceError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        entry = CODES.get(cls.code)
        if entry is None:
            raise TypeError(f"{cls.__name__}: error code {cls.code!r} is not in shared.core.errors.CODES")
        if not entry.status:
            raise TypeError(f"{cls.__name__}: {cls.code!r} is not answered with an HTTP status of its own")
        if "status" in cls.__dict__ and cls.status != entry.status:
            raise TypeError(f"{cls.__name__}: status {cls.status} contradicts CODES[{cls.code!r}] ({entry.status})")
        cls.status = entry.status

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidParameter(ServiceError):
    code = "invalid_parameter"


class ConflictingParameter(InvalidParameter):
    code = "conflicting_parameter"


class InvalidSpeakerNames(InvalidParameter):
    code = "invalid_speaker_names"


class InvalidVoiceId(ServiceError):
    code = "invalid_voice_id"


class VoiceNotFound(ServiceError):
    code = "voice_not_found"


class VoiceNameTaken(ServiceError):
    code = "voice_name_taken"


class TooManyVoices(ServiceError):
    code = "too_many_voices"


class InvalidVoiceName(ServiceError):
    code = "invalid_voice_name"


class InvalidVoiceSample(ServiceError):
    code = "invalid_voice_sample"


class TooLittleSpeech(ServiceError):
    code = "too_little_speech"


class SeveralVoices(ServiceError):
    code = "several_voices"


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


class StorageQuotaExceeded(ServiceError):
    code = "storage_quota_exceeded"


class UnsupportedLanguage(ServiceError):
    code = "unsupported_language"


class InvalidJobId(ServiceError):
    code = "invalid_job_id"


class JobNotFound(ServiceError):
    code = "job_not_found"


class JobConflict(ServiceError):
    """The job is not in a state that allows the request (cancel a finished job, read an unfinished result)."""

    code = "job_state_conflict"


class JobFinished(JobConflict):
    code = "job_finished"


class JobNotFinished(JobConflict):
    code = "job_not_finished"


class JobFailed(JobConflict):
    code = "job_failed"


class InvalidWebhookUrl(ServiceError):
    code = "invalid_webhook_url"


class WebhooksDisabled(ServiceError):
    code = "webhooks_disabled"


class WebhookSecretShared(ServiceError):
    code = "webhook_secret_shared"


class ClientDisconnected(ServiceError):
    """The client closed the connection while its synchronous transcription ran: the work was stopped."""

    code = "client_disconnected"


class ModelNotFound(ServiceError):
    code = "model_not_found"


class PageUnavailable(ServiceError):
    code = "page_unavailable"


class StorageBusy(ServiceError):
    code = "storage_busy"
