"""The options of every transcription route, accepted as query parameters OR as form fields.

Each group of options is one pydantic model (TranscribeParams, FormatParams, and the jobs route's own).
A route takes it through one dependency, which
- declares the model as query parameters (so the OpenAPI document lists them, and FastAPI checks them),
- reads the string fields of a form body (multipart or urlencoded; parsed once, the upload handling
  reuses the parse),
- takes each option from the query or the form, refusing one given both ways with different values
  (422 `conflicting_parameter`), and unknown form fields (422 `invalid_parameter`),
- validates the result with the same model: one set of names, one validation, one code path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel, Field, ValidationError

from shared.core.domain import OutputFormat, SpeakerHints, Task, TranscribeOptions
from shared.core.errors import ConflictingParameter, InvalidParameter

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
FILE_FIELD = "file"
M = TypeVar("M", bound=BaseModel)
MAX_VOICES = TranscribeOptions.model_fields["voices"].metadata[0].max_length


class TranscribeParams(BaseModel):
    """Transcription options: query parameters, or form fields of the same names."""

    diarize: bool = Field(True, description="label segments with speakers")
    language: str | None = Field(None, max_length=16, description="ISO 639-1 code; omit to detect it")
    task: Task = Field(Task.transcribe, description="transcribe, or translate into English")
    word_timestamps: bool = Field(False, description="include per-word timings")
    initial_prompt: str | None = Field(None, max_length=1000, description="context or spellings to prime Whisper")
    num_speakers: int | None = Field(None, ge=1, le=32, description="exact number of speakers, if known")
    min_speakers: int | None = Field(None, ge=1, le=32, description="at least this many speakers")
    max_speakers: int | None = Field(None, ge=1, le=32, description="at most this many speakers")
    voices: str | None = Field(
        None, max_length=4000, description="ids of your enrolled voices (POST /api/voices), comma-separated: "
        "name the speakers whose voices match"
    )  # fmt: skip
    identify: bool = Field(False, description="name speakers with every voice you have enrolled")

    def voice_ids(self) -> list[str]:
        ids = [v.strip() for v in (self.voices or "").split(",") if v.strip()]
        if len(ids) > MAX_VOICES:
            raise InvalidParameter(f"voices: at most {MAX_VOICES} voice ids")
        return ids

    def options(self) -> TranscribeOptions:
        try:
            hints = SpeakerHints(
                num_speakers=self.num_speakers, min_speakers=self.min_speakers, max_speakers=self.max_speakers
            )
        except ValidationError as exc:
            raise InvalidParameter("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        return TranscribeOptions(
            diarize=self.diarize,
            speakers=hints,
            language=self.language or None,
            task=self.task,
            word_timestamps=self.word_timestamps,
            initial_prompt=self.initial_prompt,
            voices=self.voice_ids(),
            identify=self.identify,
        )


class FormatParams(BaseModel):
    format: OutputFormat = Field(OutputFormat.json, description="json, srt, vtt, txt or rttm")


# --- one code path for both sources ---
async def form_fields(request: Request) -> dict[str, str]:
    """The string fields of a form body ({} for any other body). Starlette keeps the parsed form on the
    request, so the upload handling (shared/api/uploads.py) reads the same parse."""
    if not request.headers.get("content-type", "").startswith(FORM_TYPES):
        return {}
    form = await request.form(max_files=1, max_fields=50)
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            continue
        if key in fields and fields[key] != value:
            raise ConflictingParameter(f"form field {key!r} given twice with different values")
        fields[key] = value
    return fields


def check_form_fields(fields: Mapping[str, str], request: Request) -> None:
    """Refuse form fields that are not among the route's query parameters (options included)."""
    unknown = sorted(set(fields) - {FILE_FIELD} - route_query_names(request.scope.get("route")))
    if unknown:
        raise InvalidParameter(f"unknown form field(s): {', '.join(unknown)}")


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def route_query_names(route) -> frozenset[str]:
    """Every query parameter a route declares, in its signature or its dependencies' (models expanded)."""
    if route is None or getattr(route, "dependant", None) is None:
        return frozenset()
    key = id(route)
    if key not in _QUERY_NAMES:
        names: set[str] = set()
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            pending.extend(dependant.dependencies)
            for field in dependant.query_params:
                annotation = field.field_info.annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                    names |= {f.alias or n for n, f in annotation.model_fields.items()}
                else:
                    names.add(field.alias)
        _QUERY_NAMES[key] = frozenset(names)
    return _QUERY_NAMES[key]


def merge_params(model: type[M], query: Mapping[str, str], form: Mapping[str, str]) -> M:
    """The model from the query parameters and form fields together; an option in both must agree."""
    raw: dict[str, str] = {}
    for name in model.model_fields:
        q, f = query.get(name), form.get(name)
        if q is not None and f is not None and q != f and _one(model, name, q) != _one(model, name, f):
            raise ConflictingParameter(
                f"{name} is given as a query parameter ({q!r}) and as a form field ({f!r}) with different "
                "values: give it once"
            )
        value = f if f is not None else q
        if value is not None:
            raw[name] = value
    return _validate(model, raw)


def _one(model: type[BaseModel], name: str, value: str):
    return getattr(_validate(model, {name: value}), name)


def _validate(model: type[M], raw: dict) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidParameter(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors())
        ) from None


async def request_params(request: Request, model: type[M]) -> M:
    """`model` from this request's query parameters and form fields: the one way options are read."""
    fields = await form_fields(request)
    check_form_fields(fields, request)
    return merge_params(model, request.query_params, fields)


# --- the dependencies the routes use ---
async def transcribe_options(
    request: Request, _query: Annotated[TranscribeParams, Query()]
) -> TranscribeOptions:
    return (await request_params(request, TranscribeParams)).options()


async def output_format(request: Request, _query: Annotated[FormatParams, Query()]) -> OutputFormat:
    return (await request_params(request, FormatParams)).format


def form_body_schema(*models: type[BaseModel], file: bool = False, file_required: bool = False) -> dict:
    """An OpenAPI request body: the models' fields as form fields (multipart or urlencoded)."""
    props: dict = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = schema.get("$defs", {})
        for name, prop in schema["properties"].items():
            props[name] = _inline(prop, defs)
    content = {"multipart/form-data": {"schema": {"type": "object", "properties": dict(props)}}}
    if file:
        content["multipart/form-data"]["schema"]["properties"][FILE_FIELD] = {
            "type": "string", "format": "binary", "description": "the audio"
        }  # fmt: skip
        if file_required:
            content["multipart/form-data"]["schema"]["required"] = [FILE_FIELD]
    else:
        content["application/x-www-form-urlencoded"] = {"schema": {"type": "object", "properties": dict(props)}}
    return {"requestBody": {"required": file_required, "content": content}}


def _inline(prop: dict, defs: dict) -> dict:
    ref = prop.get("$ref") or next((p.get("$ref") for p in prop.get("allOf", []) if "$ref" in p), None)
    if ref:
        target = dict(defs[ref.rsplit("/", 1)[-1]])
        rest = {k: v for k, v in prop.items() if k not in ("$ref", "allOf")}
        return target | rest
    if "anyOf" in prop:
        return prop | {"anyOf": [_inline(p, defs) for p in prop["anyOf"]]}
    return prop
