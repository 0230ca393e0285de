"""Enrolled voices: enrol one by name from samples of that person alone, list, rename and delete them
(docs/voices.md). Each voice belongs to the API key that enrolled it; another key's ids answer 404
voice_not_found, as missing ones do.

An enrolment (multipart) gives its sample exactly one way: one or more `file` parts; or `clip_id` +
`start` + `end`, a span of one of the caller's clips; or `samples`, a JSON list of such spans (of one
clip or several). Uploaded samples are staged like any upload (MAX_UPLOAD_MB), voiceprinted, deleted.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from shared.api.clips import owner
from shared.api.params import FORM_TYPES
from shared.api.uploads import stage_upload
from shared.core.domain import ID_PATTERN, is_id
from shared.core.errors import ConflictingParameter, InvalidParameter, InvalidVoiceId, InvalidVoiceSample
from shared.service.voices import MAX_SAMPLES, Sample, VoiceService
from shared.voices.model import Voice, VoiceList, checked_name

router = APIRouter(prefix="/api", tags=["voices"])

FILE, NAME, CLIP_ID, START, END, SAMPLES = "file", "name", "clip_id", "start", "end", "samples"
FIELDS = {NAME, CLIP_ID, START, END, SAMPLES}
ONE_WAY = "give the sample one way: file part(s), or clip_id with start and end, or samples (a JSON list of spans)"

ENROL_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [NAME],
                    "properties": {
                        NAME: {"type": "string", "maxLength": 64, "description": "what transcripts call this voice"},
                        FILE: {"type": "array", "items": {"type": "string", "format": "binary"},
                               "description": "audio of this person alone (one or more files)"},
                        CLIP_ID: {"type": "string", "pattern": ID_PATTERN, "description": "one of your clips"},
                        START: {"type": "number", "description": "the span's start in the clip (seconds)"},
                        END: {"type": "number", "description": "the span's end in the clip (seconds)"},
                        SAMPLES: {"type": "string", "description": 'a JSON list of spans: '
                                  '[{"clip_id": "...", "start": 1.0, "end": 9.5}, ...]'},
                    },
                }  # fmt: skip
            }
        },
    }
}


class Span(BaseModel):
    """A stretch of one of the caller's clips that holds the voice."""

    clip_id: str
    start: float = Field(ge=0, allow_inf_nan=False)
    end: float = Field(gt=0, allow_inf_nan=False)


class Rename(BaseModel):
    name: str = Field(description="the voice's new name")


def get_voices(request: Request) -> VoiceService:
    return request.app.state.voices


def check_voice_id(voice_id: str) -> str:
    if not is_id(voice_id):
        raise InvalidVoiceId(f"{voice_id[:40]!r} is not a voice id (32 lowercase hex characters)")
    return voice_id


@router.post("/voices", status_code=201, response_model=Voice, openapi_extra=ENROL_BODY)
async def enrol_voice(
    request: Request, voices: VoiceService = Depends(get_voices), caller: str = Depends(owner)
) -> Voice:
    """Enrol a voice: `name` and 3+ seconds of that person alone (VOICE_MIN_SPEECH_S), as file part(s),
    a span of one of your clips (`clip_id`, `start`, `end`) or several (`samples`). Refused, with
    nothing kept, when the sample holds too little speech or more than one voice."""
    if not request.headers.get("content-type", "").startswith(FORM_TYPES):
        raise InvalidParameter("send the voice as multipart/form-data: a 'name' field and the sample")
    staged: list[Path] = []
    try:
        async with request.form(max_files=MAX_SAMPLES + 1, max_fields=50) as form:
            fields = _fields(form)
            name = checked_name(fields.get(NAME))
            files = [v for k, v in form.multi_items() if k == FILE]
            spans = _spans(fields)
            if (len(files) > 0) + (spans is not None) != 1:
                raise InvalidVoiceSample(ONE_WAY)
            if files:
                if len(files) > MAX_SAMPLES:
                    raise InvalidVoiceSample(f"at most {MAX_SAMPLES} samples per voice")
                filenames = []
                for upload in files:
                    if not isinstance(upload, UploadFile):
                        raise InvalidVoiceSample(f"'{FILE}' must be a file part (the audio), not a text field")
                    staged.append(await stage_upload(upload, voices.transcription.clips))
                    filenames.append(upload.filename)
        if staged:
            return await run_in_threadpool(voices.enroll_uploads, caller, name, staged, filenames)
        return await run_in_threadpool(_enrol_spans, voices, caller, name, spans)
    finally:
        for path in staged:
            path.unlink(missing_ok=True)


def _fields(form) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if key == FILE:
            continue
        if key not in FIELDS:
            raise InvalidParameter(f"unknown form field {key[:40]!r}: send name and the sample ({ONE_WAY})")
        if not isinstance(value, str):
            raise InvalidParameter(f"form field {key!r} must be text, not a file")
        if key in fields and fields[key] != value:
            raise ConflictingParameter(f"form field {key!r} given twice with different values")
        fields[key] = value
    return fields


def _spans(fields: dict[str, str]) -> list[Span] | None:
    """The clip spans the fields give (None: none given that way); both ways at once is one too many."""
    single = [f for f in (CLIP_ID, START, END) if f in fields]
    if single and SAMPLES in fields:
        raise InvalidVoiceSample(ONE_WAY)
    if single:
        if len(single) != 3:
            raise InvalidVoiceSample("a clip span needs clip_id, start and end")
        raw = [{CLIP_ID: fields[CLIP_ID], START: fields[START], END: fields[END]}]
    elif SAMPLES in fields:
        try:
            raw = json.loads(fields[SAMPLES])
        except ValueError:
            raise InvalidVoiceSample('samples is not JSON: send [{"clip_id": "...", "start": 1.0, "end": 9.5}]') from None
        if not isinstance(raw, list) or not raw:
            raise InvalidVoiceSample("samples must be a non-empty JSON list of {clip_id, start, end}")
        if len(raw) > MAX_SAMPLES:
            raise InvalidVoiceSample(f"at most {MAX_SAMPLES} samples per voice")
    else:
        return None
    spans = []
    for i, item in enumerate(raw):
        try:
            span = Span.model_validate(item)
        except ValidationError as exc:
            where = "" if single else f"samples[{i}]: "
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'span'}: {e['msg']}" for e in exc.errors())
            raise InvalidVoiceSample(f"{where}{problems}") from None
        if span.end <= span.start:
            raise InvalidVoiceSample(f"the span {span.start:g}-{span.end:g} s must have start < end")
        spans.append(span)
    return spans


def _enrol_spans(voices: VoiceService, caller: str, name: str, spans: list[Span]) -> Voice:
    by_clip: dict[str, list[tuple[float, float]]] = {}
    for span in spans:
        by_clip.setdefault(span.clip_id, []).append((span.start, span.end))
    samples: list[Sample] = [voices.clip_sample(clip_id, caller, s) for clip_id, s in by_clip.items()]
    return voices.enroll(caller, name, samples)


@router.get("/voices", response_model=VoiceList)
def list_voices(voices: VoiceService = Depends(get_voices), caller: str = Depends(owner)) -> VoiceList:
    """Your enrolled voices, oldest first."""
    return VoiceList(voices=voices.list(caller))


@router.get("/voices/{voice_id}", response_model=Voice)
def get_voice(voice_id: str, voices: VoiceService = Depends(get_voices), caller: str = Depends(owner)) -> Voice:
    return voices.get(check_voice_id(voice_id), caller)


@router.patch("/voices/{voice_id}", response_model=Voice)
def rename_voice(
    voice_id: str,
    rename: Rename = Body(...),
    voices: VoiceService = Depends(get_voices),
    caller: str = Depends(owner),
) -> Voice:
    """Rename a voice: new transcripts use the new name; finished ones keep the name they were made with."""
    return voices.rename(check_voice_id(voice_id), caller, rename.name)


@router.delete("/voices/{voice_id}", status_code=204, response_class=Response)
def delete_voice(voice_id: str, voices: VoiceService = Depends(get_voices), caller: str = Depends(owner)) -> Response:
    """Delete a voice and its voiceprint for good."""
    voices.delete(check_voice_id(voice_id), caller)
    return Response(status_code=204)
