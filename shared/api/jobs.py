"""Single-step transcription jobs: submit a file (or a stored clip) once, then poll, or get a webhook."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from shared.api.clips import get_service, owner, transcript_response
from shared.api.params import (
    FormatParams,
    TranscribeParams,
    form_body_schema,
    output_format,
    request_params,
    transcribe_options,
)
from shared.api.uploads import UPLOAD_FIELD, receive_upload
from shared.core.domain import OutputFormat, TranscribeOptions, Transcript
from shared.core.errors import InvalidParameter, InvalidSpeakerNames, JobFailed, JobNotFinished
from shared.jobs.model import (
    DeliveryAttempt,
    Job,
    JobLinks,
    JobStatus,
    Webhook,
    check_job_id,
    job_json,
    job_links,
    new_job_id,
)
from shared.jobs.manager import JobManager
from shared.service.transcription import TranscriptionService

router = APIRouter(prefix="/api", tags=["jobs"])

class JobParams(BaseModel):
    """The submit route's own options; like the transcription options, query parameters or form fields."""

    clip_id: str | None = Field(None, description="transcribe a stored clip instead of uploading a file")
    webhook_url: str | None = Field(None, max_length=2048, description="POSTed a signed event when the job ends")
    wait: bool = Field(False, description="hold the request until the job ends (bounded by JOB_WAIT_MAX_S)")


async def job_params(request: Request, _query: Annotated[JobParams, Query()]) -> JobParams:
    return await request_params(request, JobParams)


# multipart `file` plus every option as a form field (or query parameter: the same names)
SUBMIT_BODY = form_body_schema(JobParams, TranscribeParams, FormatParams, file=True)


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


class JobView(Job):
    links: JobLinks


class Deliveries(BaseModel):
    job_id: str
    webhook: Webhook | None
    attempts: list[DeliveryAttempt]


def view(job: Job, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(job_json(job), status_code=status, headers=headers)


@router.post(
    "/transcriptions",
    status_code=202,
    response_model=JobView,
    responses={200: {"model": JobView, "description": "wait=true and the job ended within the wait"}},
    openapi_extra=SUBMIT_BODY,
)
async def submit_transcription(
    request: Request,
    params: JobParams = Depends(job_params),
    options: TranscribeOptions = Depends(transcribe_options),
    fmt: OutputFormat = Depends(output_format),
    service: TranscriptionService = Depends(get_service),
    jobs: JobManager = Depends(get_jobs),
    caller: str = Depends(owner),
) -> Response:
    """Queue a transcription: multipart `file` (or `clip_id` of one of the caller's clips), the options
    of /api/transcribe, and an optional webhook_url, each as a query parameter or a form field. Answers
    202 with the job; poll its `links.self`, or wait for the webhook. The job (and a clip uploaded with
    it) is the caller's: another API key gets 404 for it."""
    clip_id, webhook_url, wait = params.clip_id, params.webhook_url, params.wait
    options = service.check_options(options, caller)  # an unknown voice id is refused here, not when it runs
    if webhook_url:
        await run_in_threadpool(jobs.check_webhook_url, webhook_url)
    upload = await receive_upload(request, service.clips, required=False)
    job_id = new_job_id()
    try:
        if upload is not None and upload.path is not None:
            if clip_id:
                raise InvalidParameter("send either a file or a clip_id, not both")
            staged, upload.path = upload.path, None
            clip = await run_in_threadpool(
                service.add_clip, staged, filename=upload.filename, content_type=upload.content_type,
                owner=caller, job_id=job_id,
            )  # fmt: skip
            owns_clip = True
        elif clip_id:
            clip = service.clip(clip_id, caller)  # the store checks the id
            owns_clip = False
        else:
            raise InvalidParameter(f"send the audio as a multipart '{UPLOAD_FIELD}' field, or a clip_id")
    finally:
        if upload is not None and upload.path is not None:
            upload.path.unlink(missing_ok=True)
    job = await run_in_threadpool(
        jobs.submit, clip, options, format=fmt, webhook_url=webhook_url or None, owns_clip=owns_clip,
        owner=caller, job_id=job_id,
    )  # fmt: skip
    if wait:
        job = await _wait_until_ended(jobs, job.job_id, jobs.settings.job_wait_max_s)
    return view(job, 200 if job.finished else 202, headers={"location": job_links(job).self})


async def _wait_until_ended(jobs: JobManager, job_id: str, max_s: float) -> Job:
    deadline = time.monotonic() + max_s
    delay = 0.05
    while True:
        job = await run_in_threadpool(jobs.get, job_id)
        if job.finished or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, jobs: JobManager = Depends(get_jobs), caller: str = Depends(owner)) -> Response:
    """Status, progress (audio seconds done / total) and, once it succeeded, the transcript."""
    return view(jobs.get(check_job_id(job_id), caller))


@router.delete("/jobs/{job_id}", response_model=JobView)
def cancel_job(job_id: str, jobs: JobManager = Depends(get_jobs), caller: str = Depends(owner)) -> Response:
    """Cancel a queued or running job (409 once it has ended)."""
    return view(jobs.cancel(check_job_id(job_id), caller))


@router.get(
    "/jobs/{job_id}/result",
    response_model=Transcript,
    responses={200: {"content": {t: {} for t in ("application/x-subrip", "text/vtt", "text/plain")}}},
)
def get_job_result(
    job_id: str,
    format: OutputFormat | None = Query(None, description="default: the job's own format"),  # noqa: A002
    speaker_names: str | None = Query(
        None,
        max_length=4096,
        description='a JSON object renaming speakers in the result, e.g. {"SPEAKER_00": "Alice"}',
    ),
    jobs: JobManager = Depends(get_jobs),
    caller: str = Depends(owner),
) -> Response:
    """The transcript of a succeeded job, rendered as json, srt, vtt, txt or rttm; `speaker_names`
    relabels its speakers first (segments, words and the speaker list)."""
    job = jobs.get(check_job_id(job_id), caller)
    if job.status is JobStatus.failed:
        raise JobFailed(f"job {job_id} failed: {job.error.message if job.error else 'no reason'}")
    if job.status is not JobStatus.succeeded or job.result is None:
        raise JobNotFinished(f"job {job_id} is {job.status.value}: no result")
    fmt = format or job.format
    transcript = job.result
    if speaker_names:
        transcript = relabel(transcript, parse_speaker_names(speaker_names, transcript, fmt))
    return transcript_response(transcript, fmt, job.options)


SPEAKER_NAME_MAX = 64
_NAME_FORBIDDEN = set("<>&[]")  # would break the VTT voice tag (<v name>) or SRT's [name] prefix


def parse_speaker_names(raw: str, transcript: Transcript, fmt: OutputFormat) -> dict[str, str]:
    """{label: new name} from the query's JSON, each label one of the transcript's speakers and each name
    something every format can carry (RTTM's speaker field has no spaces)."""
    example = '{"SPEAKER_00": "Alice"}'
    try:
        names = json.loads(raw)
    except ValueError:
        raise InvalidSpeakerNames(f"speaker_names is not JSON: expected an object such as {example}") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise InvalidSpeakerNames(f"speaker_names must be a JSON object of strings, such as {example}")
    known = set(transcript.speakers) | {s.speaker for s in transcript.segments if s.speaker}
    unknown = sorted(set(names) - known)
    if unknown:
        have = ", ".join(sorted(known)) or "none: the transcript was not diarized"
        raise InvalidSpeakerNames(f"speaker_names: no speaker {unknown[0]!r} in this transcript (its speakers: {have})")
    cleaned = {}
    for label, name in names.items():
        name = name.strip()
        if not name or len(name) > SPEAKER_NAME_MAX or not name.isprintable() or _NAME_FORBIDDEN & set(name):
            raise InvalidSpeakerNames(
                f"speaker_names: the name for {label} must be 1-{SPEAKER_NAME_MAX} printable characters "
                f"without {' '.join(sorted(_NAME_FORBIDDEN))}"
            )
        if fmt is OutputFormat.rttm and any(c.isspace() for c in name):
            raise InvalidSpeakerNames(f"speaker_names: RTTM speaker names cannot contain spaces ({label}: {name!r})")
        cleaned[label] = name
    return cleaned


def relabel(transcript: Transcript, names: dict[str, str]) -> Transcript:
    def rename(label: str | None) -> str | None:
        return names.get(label, label) if label else label

    segments = [
        seg.model_copy(update={
            "speaker": rename(seg.speaker),
            "words": [w.model_copy(update={"speaker": rename(w.speaker)}) for w in seg.words]
            if seg.words is not None else None,
        })
        for seg in transcript.segments
    ]  # fmt: skip
    speakers = list(dict.fromkeys(rename(s) for s in transcript.speakers))
    return transcript.model_copy(update={"segments": segments, "speakers": speakers})


@router.get("/jobs/{job_id}/deliveries", response_model=Deliveries)
def get_deliveries(job_id: str, jobs: JobManager = Depends(get_jobs), caller: str = Depends(owner)) -> Deliveries:
    """Every webhook attempt for the job: when, the status code or error, and whether it will be retried."""
    job = jobs.get(check_job_id(job_id), caller)
    return Deliveries(job_id=job.job_id, webhook=job.webhook, attempts=jobs.deliveries(job.job_id))
