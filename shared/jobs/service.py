"""JobService: the jobs application service the web layer calls (submit, get, cancel, deliveries), and
the owner of the store, the worker threads and the webhook sender. No HTTP in here."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from shared.config import Settings
from shared.domain import ClipInfo, OutputFormat, TranscribeOptions
from shared.errors import ServiceError
from shared.jobs.model import DeliveryAttempt, Job, JobStatus, Progress, Webhook, new_job_id, new_webhook_id
from shared.jobs.runner import JobRunner
from shared.jobs.sqlite_store import SqliteJobStore
from shared.jobs.store import JobStore
from shared.service import TranscriptionService
from shared.webhooks import WebhookSender, check_webhook_url, parse_secret

log = logging.getLogger(__name__)

JOBS_DB = "jobs.sqlite3"


class WebhooksDisabled(ServiceError):
    status, code = 422, "webhooks_disabled"


class JobService:
    def __init__(self, settings: Settings, service: TranscriptionService, store: JobStore):
        self.settings = settings
        self.service = service
        self.store = store
        self.webhooks: WebhookSender | None = None
        if settings.webhook_secret:
            self.webhooks = WebhookSender(
                store,
                parse_secret(settings.webhook_secret),
                allow_private=settings.webhook_allow_private,
                max_attempts=settings.webhook_max_attempts,
                backoff_s=settings.webhook_backoff_s,
                backoff_max_s=settings.webhook_backoff_max_s,
                timeout_s=settings.webhook_timeout_s,
            )
        self.runner = JobRunner(
            store,
            service,
            workers=settings.job_workers,
            max_attempts=settings.job_max_attempts,
            result_ttl_s=settings.job_result_ttl_s,
            on_finished=self.webhooks.wake if self.webhooks else None,
        )

    @classmethod
    def open(cls, settings: Settings, service: TranscriptionService, store: JobStore | None = None) -> JobService:
        """Workers started and interrupted jobs recovered, over the given store or the SQLite one under the
        storage path."""
        store = store or SqliteJobStore(settings.audio_storage_path / JOBS_DB)
        return cls(settings, service, store).start()

    def start(self) -> "JobService":
        self.runner.start()
        if self.webhooks:
            self.webhooks.start()
        return self

    def close(self) -> None:
        stopped = self.runner.close()
        if self.webhooks:
            self.webhooks.close()
        if stopped:  # else a worker still finishing a batch would find its store closed
            self.store.close()

    def check_webhook_url(self, url: str) -> str:
        if not self.webhooks:
            raise WebhooksDisabled("webhooks are off on this server: it needs WEBHOOK_SECRET (whsec_<base64>)")
        return check_webhook_url(url, allow_private=self.settings.webhook_allow_private)

    def submit(
        self,
        clip: ClipInfo,
        options: TranscribeOptions,
        *,
        format: OutputFormat = OutputFormat.json,  # noqa: A002
        webhook_url: str | None = None,
        owns_clip: bool = False,
    ) -> Job:
        """Queue a transcription of a stored clip. Options and webhook_url must already be checked."""
        job = Job(
            job_id=new_job_id(),
            status=JobStatus.queued,
            clip_id=clip.clip_id,
            owns_clip=owns_clip,
            options=options,
            format=format,
            created_at=datetime.now(timezone.utc),
            progress=Progress(done=0.0, total=clip.duration),
            webhook=Webhook(url=webhook_url, id=new_webhook_id()) if webhook_url else None,
        )
        job = self.store.create(job)
        self.runner.notify()
        return job

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def cancel(self, job_id: str) -> Job:
        return self.store.cancel(job_id)

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        return self.store.deliveries(job_id)
