"""OpenAI-compatible audio API: POST /v1/audio/transcriptions, /v1/audio/translations, GET /v1/models.

Clients of the OpenAI audio API (the official SDKs included) work by changing only their base_url. Any
model name maps to the configured Whisper model. Diarization is off by default (OpenAI clients do not
expect speakers); `response_format=diarized_json` (OpenAI's own diarized shape) turns it on, and the
extra form field `diarize=true` adds `speaker` to verbose_json segments and words and speaker labels to
text, srt and vtt. Speaker hints (num_speakers, min_speakers, max_speakers) are extra form fields too.
OpenAI's known_speaker_names[] / known_speaker_references[] name speakers after reference voices
(shared/api/openai_speakers.py); they imply diarization.
Every field may also be sent as a query parameter of the same name; given both ways, the values must
agree (else 422 conflicting_parameter).
Errors are OpenAI-shaped, a superset of ours: {"error": {"code", "message", "type", "param"}}.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.api.cancel_on_disconnect import run_until_disconnected
from shared.api.clips import get_service
from shared.api.openai_speakers import FIELDS as SPEAKER_FIELDS
from shared.api.openai_speakers import (
    FORM_PART_BYTES,
    MAX_KNOWN_SPEAKERS,
    NAMES,
    REFERENCES,
    known_speakers_in,
    stage_references,
)
from shared.api.uploads import UPLOAD_FIELD, receive_upload
from shared.core.domain import Segment, SpeakerHints, Task, TranscribeOptions, Transcript
from shared.core.errors import ConflictingParameter, InvalidParameter, ModelNotFound, ServiceError, http_code
from shared.service.formats import to_srt, to_txt, to_vtt
from shared.service.transcription import TranscriptionService

STARTED = int(time.time())


def openai_error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse(
        {"error": {"code": code, "message": message, "type": kind, "param": param}}, status_code=status
    )


class OpenAIRoute(APIRoute):
    """Answers this router's errors in OpenAI's shape (our code and message, plus type and param)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return openai_error(exc.status, exc.code, exc.message, getattr(exc, "param", None))
            except StarletteHTTPException as exc:
                return openai_error(exc.status_code, http_code(exc.status_code), str(exc.detail))

        return route


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]


class AudioParams(BaseModel):
    """The form fields besides `file`. Unknown fields are refused, as OpenAI does."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="any name (whisper-1, ...): the server's configured model runs")
    language: str | None = Field(None, description="ISO 639-1 code of the audio; omit to detect it")
    prompt: str | None = Field(None, max_length=2000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    stream: bool = False
    diarize: bool = Field(False, description="extension: label segments with speakers")
    num_speakers: int | None = Field(None, ge=1, le=32, description="extension")
    min_speakers: int | None = Field(None, ge=1, le=32, description="extension")
    max_speakers: int | None = Field(None, ge=1, le=32, description="extension")


TRANSLATION_REFUSES = ("language", "timestamp_granularities", "diarized_json")


def _form_schema(task: Task) -> dict:
    props: dict = {UPLOAD_FIELD: {"type": "string", "format": "binary"}}
    for name, field in AudioParams.model_fields.items():
        if task is Task.translate and name in TRANSLATION_REFUSES:
            continue
        key = "timestamp_granularities[]" if name == "timestamp_granularities" else name
        props[key] = {"type": "string", "description": field.description or ""}
    if task is Task.transcribe:
        props[f"{NAMES}[]"] = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_KNOWN_SPEAKERS,
                               "description": f"names of the voices in {REFERENCES}[], in the same order"}
        props[f"{REFERENCES}[]"] = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_KNOWN_SPEAKERS,
                                    "description": "data URLs of 2-10 s of each known speaker's audio"}
    formats = [f for f in ResponseFormat.__args__ if task is Task.transcribe or f != "diarized_json"]
    props["response_format"]["enum"] = formats
    schema = {"type": "object", "required": [UPLOAD_FIELD, "model"], "properties": props}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def parse_params(form, task: Task, query=None) -> AudioParams:
    """The form fields, and the same names as query parameters (one given both ways must agree)."""
    raw = _raw_fields(form, skip=SPEAKER_FIELDS if task is Task.transcribe else ())
    for key, value in _raw_fields(query).items() if query is not None else ():
        if key in raw and raw[key] != value and _field_value(key, raw[key]) != _field_value(key, value):
            exc = ConflictingParameter(f"{key} is given as a query parameter and as a form field with different values")
            exc.param = key  # type: ignore[attr-defined]
            raise exc
        raw.setdefault(key, value)
    if any(key in SPEAKER_FIELDS for key in raw):
        key = next(key for key in raw if key in SPEAKER_FIELDS)
        where = "for translations" if task is Task.translate else "as query parameters: send them as form fields"
        raise _param_error(key, f"{key} is not supported {where}")
    if task is Task.translate:
        for name in TRANSLATION_REFUSES:
            if name in raw or raw.get("response_format") == name:
                raise _param_error(name, f"{name} is not supported for translations")
    try:
        params = AudioParams.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err.get("loc") else None
        raise _param_error(param, f"{param}: {err['msg']}" if param else err["msg"]) from None
    if params.stream:
        raise _param_error("stream", "stream=true is not supported here: use POST /api/transcribe/stream")
    return params


def _raw_fields(items, skip=()) -> dict:
    raw: dict = {}
    for key, value in items.multi_items():
        if key == UPLOAD_FIELD or key.startswith("chunking_strategy") or key in skip:
            continue  # chunking is always ours (VAD); the field is accepted and ignored
        if not isinstance(value, str):
            raise _param_error(key, "only `file` may be a file")
        if key in ("timestamp_granularities[]", "timestamp_granularities"):
            raw.setdefault("timestamp_granularities", []).append(value)
        else:
            raw[key] = value
    return raw


def _field_value(key: str, value):
    try:
        return getattr(AudioParams.model_validate({key: value}), key)
    except ValidationError:
        return value  # refused with its reason when the whole set is validated


def _param_error(param: str | None, message: str) -> InvalidParameter:
    exc = InvalidParameter(message)
    exc.param = param  # type: ignore[attr-defined]
    return exc


def options_for(params: AudioParams, task: Task) -> TranscribeOptions:
    verbose = params.response_format == "verbose_json"
    try:
        hints = SpeakerHints(
            num_speakers=params.num_speakers, min_speakers=params.min_speakers, max_speakers=params.max_speakers
        )
    except ValidationError as exc:
        raise _param_error("num_speakers", exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return TranscribeOptions(
        diarize=params.diarize or params.response_format == "diarized_json",
        speakers=hints,
        language=params.language or None,
        task=task,
        word_timestamps=verbose and "word" in params.timestamp_granularities,
        initial_prompt=params.prompt or None,
        temperature=params.temperature,
    )


async def _handle(request: Request, service: TranscriptionService, task: Task) -> Response:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        # parsed here first (receive_upload reuses it) to let a field hold a reference's data URL
        await request.form(max_files=1, max_fields=50, max_part_size=FORM_PART_BYTES)
    upload = await receive_upload(request, service.clips)
    references: list = []
    try:
        form = await request.form()  # the form parsed above
        params = parse_params(form, task, request.query_params)
        known = known_speakers_in(form) if task is Task.transcribe else None
        if known:
            params = params.model_copy(update={"diarize": True})  # references imply diarization
        options = service.check_options(options_for(params, task))
        if known:
            references = await stage_references(known, service.clips)
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    voices = request.app.state.voices

    def transcribe(cancel):
        named = voices.references(known.names, references) if references else None
        return service.transcribe_upload(
            upload.path, options, filename=upload.filename, content_type=upload.content_type, cancel=cancel,
            known=named,
        )  # fmt: skip

    try:
        transcript = await run_until_disconnected(request, transcribe)  # a client that disconnects first stops it
    finally:
        upload.path.unlink(missing_ok=True)  # references() and transcribe_upload() delete what they read
        for path in references:
            path.unlink(missing_ok=True)
    return render_openai(transcript, params, task)


@router.post("/audio/transcriptions", openapi_extra=_form_schema(Task.transcribe))
async def create_transcription(request: Request, service: TranscriptionService = Depends(get_service)) -> Response:
    """OpenAI's transcription call: multipart `file` and `model`, plus the optional fields below."""
    return await _handle(request, service, Task.transcribe)


@router.post("/audio/translations", openapi_extra=_form_schema(Task.translate))
async def create_translation(request: Request, service: TranscriptionService = Depends(get_service)) -> Response:
    """OpenAI's translation call: speech in any language Whisper knows, transcribed into English."""
    return await _handle(request, service, Task.translate)


@router.get("/models")
def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_model(m) for m in _model_ids(request)]}


@router.get("/models/{model_id}")
def get_model(model_id: str, request: Request) -> dict:
    if model_id not in _model_ids(request):
        message = f"no model {model_id!r}; any name works for transcription"
        raise ModelNotFound(message)
    return _model(model_id)


def _model_ids(request: Request) -> list[str]:
    return list(dict.fromkeys(["whisper-1", request.app.state.settings.whisper_model]))


def _model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": STARTED, "owned_by": "whospoke"}


# --- responses ---
def render_openai(t: Transcript, params: AudioParams, task: Task) -> Response:
    fmt = params.response_format
    diarized = params.diarize or fmt == "diarized_json"
    text = " ".join(s.text.strip() for s in t.segments)
    usage = {"type": "duration", "seconds": math.ceil(t.duration)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    if fmt == "text":
        return PlainTextResponse(to_txt(t) if diarized else text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(t))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt")
    if fmt == "diarized_json":
        letters = _diarized_labels(t)
        segments = [
            {"type": "transcript.text.segment", "id": f"seg_{i}", "start": s.start, "end": s.end,
             "text": s.text.strip(), "speaker": letters.get(s.speaker, "A")}
            for i, s in enumerate(t.segments)
        ]  # fmt: skip
        body = {"task": "transcribe", "duration": t.duration, "text": text, "segments": segments, "usage": usage}
        return JSONResponse(body)
    language = LANGUAGE_NAMES.get(t.language, t.language)
    body = {"task": task.value, "language": language, "duration": t.duration, "text": text}
    granularities = params.timestamp_granularities or ["segment"]
    if "segment" in granularities:
        body["segments"] = [_verbose_segment(i, s, diarized) for i, s in enumerate(t.segments)]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end, **({"speaker": w.speaker} if diarized else {})}
            for s in t.segments
            for w in s.words or []
        ]
    if diarized:
        body["speakers"] = t.speakers
    body["usage"] = usage
    return JSONResponse(body)


def _verbose_segment(i: int, s: Segment, diarized: bool) -> dict:
    # the decoder statistics of the Whisper segments the words came from (their meaning: domain.Segment)
    segment = {
        "id": i, "seek": int(s.start * 100), "start": s.start, "end": s.end, "text": s.text.strip(),
        "tokens": s.tokens or [], "temperature": s.temperature, "avg_logprob": s.avg_logprob,
        "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob,
    }  # fmt: skip
    if diarized:
        segment["speaker"] = s.speaker
    return segment


def _diarized_labels(t: Transcript) -> dict[str, str]:
    """{speaker: its diarized_json label}: a known speaker's name, else A, B, ... (skipping any name)."""
    named = {s.speaker for s in t.segments if s.speaker_id and s.speaker}
    taken = {name.casefold() for name in named}
    labels: dict[str, str] = {name: name for name in named}
    letters = (letter for i in range(len(t.speakers) + len(taken)) if (letter := _letter(i)).casefold() not in taken)
    for speaker in t.speakers:
        if speaker not in labels:
            labels[speaker] = next(letters)
    return labels


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"S{i}"


# Whisper's language codes -> the names OpenAI's verbose_json reports
LANGUAGE_NAMES = dict(
    pair.replace("_", " ").split(":")
    for pair in (
        "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
        "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
        "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
        "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
        "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
        "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
        "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi "
        "pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian "
        "be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese "
        "ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar "
        "bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
        "jw:javanese su:sundanese yue:cantonese"
    ).split()
)
