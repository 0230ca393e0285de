"""Job types: what a transcription job is, as stored and as the API shows it."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from shared.core.domain import OutputFormat, TranscribeOptions, Transcript, is_id
from shared.core.errors import InvalidJobId, JobConflict, JobNotFound  # noqa: F401 - their home is core/errors.py



class JobStatus(str, Enum):
    """The one list of job states: the SQL store, the metrics and the page (via /web/config) read it."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """The job has ended: nothing moves it on again."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ENDED = tuple(s for s in JobStatus if s.terminal)  # the terminal states in declaration order


class Progress(BaseModel):
    done: float = Field(0.0, description="audio seconds transcribed")
    total: float | None = Field(None, description="audio seconds in the clip")


class JobError(BaseModel):
    code: str
    message: str


class WebhookState(str, Enum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class Webhook(BaseModel):
    url: str
    id: str = Field(description="the webhook-id header: the same on every attempt, for de-duplication")
    state: WebhookState | None = Field(None, description="null until the job ends")
    next_attempt_at: datetime | None = None


class JobLinks(BaseModel):
    self: str
    result: str
    deliveries: str
    clip: str


class Job(BaseModel):
    job_id: str
    status: JobStatus
    clip_id: str
    owns_clip: bool = Field(False, description="the clip was uploaded with the job and is deleted with it")
    owner: str = Field(
        "",
        exclude=True,  # never in the API's JSON or a webhook's body: stores write it explicitly
        description="who submitted it: the API key's id (shared/api/auth.py key_id); '' when keys are off",
    )
    options: TranscribeOptions
    format: OutputFormat = OutputFormat.json
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(0, description="times a worker started the job (a restart mid-run starts it again)")
    progress: Progress = Field(default_factory=Progress)
    result: Transcript | None = None
    error: JobError | None = None
    webhook: Webhook | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL



def job_links(job: Job) -> JobLinks:
    base = f"/api/jobs/{job.job_id}"
    return JobLinks(
        self=base, result=f"{base}/result", deliveries=f"{base}/deliveries", clip=f"/api/audio/{job.clip_id}"
    )


def job_json(job: Job, *, exclude: frozenset[str] = frozenset()) -> dict:
    """The job as JSON with its links; segment words only when they were asked for (as /api/transcribe)."""
    data = job.model_dump(mode="json", exclude=set(exclude))
    if data.get("result") and not job.options.word_timestamps:
        for segment in data["result"]["segments"]:
            segment.pop("words", None)
    data["links"] = job_links(job).model_dump()
    return data


# What went wrong with a webhook attempt, as /api/jobs/{id}/deliveries shows it (docs/api.md lists them):
# a stable word, never an exception's text (the sender logs the detail).
DeliveryError = Literal[
    "http_status",  # the receiver answered, but not 2xx: status_code says what
    "timeout",  # no answer within WEBHOOK_TIMEOUT_S
    "connect_error",  # no connection (refused, unreachable)
    "tls_error",  # the TLS handshake or the certificate check failed
    "transport_error",  # the connection broke off while the request or the answer went through
    "unresolvable_host",  # DNS gave no answer
    "refused_target",  # the host is not public (WEBHOOK_ALLOW_PRIVATE) or the URL no longer passes the check
    "not_signed",  # no WEBHOOK_SECRET where the webhook is delivered (a Modal deployment's Secret): not sent
]


class DeliveryAttempt(BaseModel):
    attempt: int
    at: datetime
    url: str
    status_code: int | None = None
    error: DeliveryError | None = None
    duration_ms: float
    outcome: Literal["delivered", "retry", "failed"]

    @field_validator("error", mode="before")
    @classmethod
    def _summary(cls, value: object) -> object:
        """Attempts stored before the summaries held free text ("HTTP 503", an exception's message): shown
        by their summary."""
        if value is None or value in DeliveryError.__args__:
            return value
        text = str(value)
        for mark, summary in _LEGACY_ERRORS:
            if mark in text:
                return summary
        return "transport_error"


_LEGACY_ERRORS = (("HTTP ", "http_status"), ("timed out", "timeout"), ("ConnectError", "connect_error"),
                  ("WEBHOOK_ALLOW_PRIVATE", "refused_target"), ("does not resolve", "unresolvable_host"),
                  ("WEBHOOK_SECRET is not set", "not_signed"))


def new_job_id() -> str:
    return uuid.uuid4().hex


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def check_job_id(job_id: str) -> str:
    if not is_id(job_id):
        raise InvalidJobId(f"malformed job_id {job_id!r}: expected 32 lowercase hex characters")
    return job_id
