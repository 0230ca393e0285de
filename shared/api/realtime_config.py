"""The transcription session's configuration for /v1/realtime: the fields of OpenAI's transcription
session object this server reads, `session.update` merged over them (only the fields present change),
checked, and turned into the live engine's LiveConfig; and the session object the server reports.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.core.domain import TranscribeOptions
from shared.core.errors import ErrorCode, ServiceError, UnsupportedLanguage, live_code
from shared.live.session import LiveConfig
from shared.service.transcription import check_language


# the codes of a refused session.update (shared/core/errors.py LIVE_CODES; docs/live.md)
INVALID_SESSION_CONFIG = live_code("invalid_session_config")
UNSUPPORTED_SESSION_TYPE = live_code("unsupported_session_type")
UNSUPPORTED_AUDIO_FORMAT = live_code("unsupported_audio_format")
UNSUPPORTED_TURN_DETECTION = live_code("unsupported_turn_detection")
UNSUPPORTED_LANGUAGE = live_code("unsupported_language")
SESSION_ALREADY_STARTED = live_code("session_already_started")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class Problem(Exception):
    """A client event the session refuses: answered with an `error` event, the session goes on."""

    def __init__(self, error: ErrorCode, message: str, param: str | None = None):
        super().__init__(message)
        self.error, self.message, self.param = error, message, param
        self.code = error.code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioFormat(_Strict):
    type: str = "audio/pcm"
    rate: int = 24000


class Transcription(_Strict):
    model: str | None = None  # any name is accepted (an alias): the server's own models transcribe
    language: str | None = Field(None, max_length=16)
    prompt: str | None = Field(None, max_length=1000)
    delay: Any = None  # accepted, not applied (as are keywords and languages)
    keywords: Any = None
    languages: Any = None
    # extensions: the caller's enrolled voices (POST /api/voices) that name speakers in the segment events
    voices: list[str] = Field(default_factory=list, max_length=100)
    identify: bool = False  # name speakers with every voice the caller has enrolled


class ServerVad(_Strict):
    type: str = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=1000)  # the engine keeps 1 s of audio before speech
    silence_duration_ms: int = Field(600, ge=100, le=5000)
    create_response: Any = None  # conversation-session fields: accepted, meaningless here
    interrupt_response: Any = None
    idle_timeout_ms: Any = None
    eagerness: Any = None  # semantic_vad's: refused below with its own code


class AudioInput(_Strict):
    format: AudioFormat = Field(default_factory=AudioFormat)
    transcription: Transcription = Field(default_factory=Transcription)
    turn_detection: ServerVad | None = Field(default_factory=ServerVad)
    noise_reduction: Any = None  # accepted, not applied: always reported as null

    @field_validator("format", "transcription", mode="before")
    @classmethod
    def _null_is_default(cls, value):
        return {} if value is None else value


class Audio(_Strict):
    input: AudioInput = Field(default_factory=AudioInput)


class SessionConfig(_Strict):
    type: Literal["transcription"] = "transcription"
    audio: Audio = Field(default_factory=Audio)
    include: list[str] | None = None


def merged(base: Any, update: Any, default: Any) -> Any:
    """`update` over `base`: only the fields present change; a field set to null is cleared, and a
    cleared object set again starts from its defaults."""
    if not isinstance(update, dict):
        return update
    start = base if isinstance(base, dict) else default if isinstance(default, dict) else {}
    out = dict(start)
    for key, value in update.items():
        out[key] = merged(start.get(key), value, default.get(key) if isinstance(default, dict) else None)
    return out


class TranscriptionSession:
    """One connection's session: its configuration, and the engine's LiveConfig that follows from it."""

    def __init__(self, settings, check_voices: Callable[[TranscribeOptions], None] | None = None):
        """`check_voices` refuses voices the caller may not use (InvalidVoiceId, VoiceNotFound)."""
        self.settings = settings
        self.check_voices = check_voices
        self.id = new_id("sess")
        self.default_model = settings.stream_final_model or settings.whisper_model
        vad = ServerVad(silence_duration_ms=settings.stream_silence_ms)
        self.config = SessionConfig(audio=Audio(input=AudioInput(turn_detection=vad)))
        self.defaults = self.config.model_dump()
        self.live = self._live_config(self.config)

    @property
    def rate(self) -> int:
        return self.config.audio.input.format.rate

    def object(self) -> dict:
        """The session as session.created and session.updated report it."""
        source = self.config.audio.input
        vad = source.turn_detection
        return {
            "type": "transcription", "id": self.id, "object": "realtime.transcription_session",
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": source.format.rate},
                "transcription": {"model": source.transcription.model or self.default_model,
                                  "language": source.transcription.language,
                                  "prompt": source.transcription.prompt or "", **self._voices()},
                "turn_detection": None if vad is None else {
                    "type": "server_vad", "threshold": vad.threshold,
                    "prefix_padding_ms": vad.prefix_padding_ms, "silence_duration_ms": vad.silence_duration_ms},
                "noise_reduction": None,
            }},
            "include": [],
        }

    def _voices(self) -> dict:
        """The extension fields, reported when set (a session without them looks like OpenAI's)."""
        t = self.config.audio.input.transcription
        return ({"voices": t.voices} if t.voices else {}) | ({"identify": True} if t.identify else {})

    def _live_config(self, config: SessionConfig) -> LiveConfig:
        source = config.audio.input
        models = {self.default_model, self.settings.stream_partial_model}
        try:
            language = source.transcription.language
            for model in models:
                language = check_language(language, model)
        except UnsupportedLanguage as exc:
            raise Problem(UNSUPPORTED_LANGUAGE, exc.message, "session.audio.input.transcription.language") from None
        options = TranscribeOptions(language=language, initial_prompt=source.transcription.prompt or None,
                                    voices=list(dict.fromkeys(source.transcription.voices)),
                                    identify=source.transcription.identify)
        if options.voices and self.check_voices is not None:
            try:
                self.check_voices(options)
            except ServiceError as exc:
                raise Problem(INVALID_SESSION_CONFIG, exc.message, "session.audio.input.transcription.voices") from None
        vad = source.turn_detection
        if vad is None:
            return LiveConfig.from_settings(self.settings, options, turn_detection=False)
        return LiveConfig.from_settings(self.settings, options, vad_threshold=vad.threshold,
                                        silence_ms=vad.silence_duration_ms, prefix_padding_ms=vad.prefix_padding_ms)

    def update(self, session: Any, started: bool) -> None:
        """Apply a `session.update`'s session (all of it, or nothing: Problem says why). `started`: audio
        has arrived, so the engine's settings can no longer change."""
        if not isinstance(session, dict):
            raise Problem(INVALID_SESSION_CONFIG, "session must be an object", "session")
        if session.get("type", "transcription") != "transcription":
            raise Problem(UNSUPPORTED_SESSION_TYPE, "this server offers transcription sessions only: "
                          'set session.type to "transcription"', "session.type")
        try:
            config = SessionConfig.model_validate(merged(self.config.model_dump(), session, self.defaults))
        except RecursionError:  # an object nested deeper than any field
            raise Problem(INVALID_SESSION_CONFIG, "session is nested too deeply", "session") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(["session", *map(str, first["loc"])])
            raise Problem(INVALID_SESSION_CONFIG, f"{param}: {first['msg']}", param) from None
        fmt, vad = config.audio.input.format, config.audio.input.turn_detection
        if fmt.type != "audio/pcm" or not 8000 <= fmt.rate <= 48000:
            raise Problem(UNSUPPORTED_AUDIO_FORMAT, f"audio {fmt.type!r} at {fmt.rate} Hz is not supported: send "
                          '{"type": "audio/pcm", "rate": 24000} (PCM16 mono; 8000-48000 Hz)', "session.audio.input.format")
        if vad is not None and vad.type != "server_vad":
            raise Problem(UNSUPPORTED_TURN_DETECTION, f"turn detection {vad.type!r} is not supported: use "
                          '"server_vad", or null for manual commits', "session.audio.input.turn_detection.type")
        live = self._live_config(config)
        if started and (live != self.live or fmt.rate != self.config.audio.input.format.rate):
            raise Problem(SESSION_ALREADY_STARTED, "the audio format, turn detection, language, prompt and voices "
                          "are fixed once audio has been appended; open a new session to change them")
        self.config, self.live = config, live
