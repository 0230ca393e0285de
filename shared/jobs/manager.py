"""JobManager: the jobs application service the web layer calls (submit, get, cancel, deliveries), and
the owner of the store, the worker threads and the webhook sender. No HTTP in here.

Where jobs run is the one seam: by default, worker threads in this process (JobExecutor) and a webhook
sender thread. Given a `dispatch` callable, the service starts neither: it stores the job and hands it
to `dispatch(job)` (on Modal, `run_job.spawn(job_id)`), and whatever runs the job delivers its webhook."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from shared.core.config import Settings
from shared.core.domain import ClipInfo, OutputFormat, TranscribeOptions
from shared.core.errors import JobNotFound, WebhooksDisabled
from shared.jobs.model import DeliveryAttempt, Job, JobStatus, Progress, Webhook, new_job_id, new_webhook_id
from shared.jobs.executor import JobExecutor
from shared.jobs.sqlite_store import SqliteJobStore
from shared.jobs.store import JobStore
from shared.service.transcription import TranscriptionService
from shared.jobs.webhooks import WebhookSender, check_webhook_url, parse_secret

log = logging.getLogger(__name__)

JOBS_DB = "jobs.sqlite3"


Dispatch = Callable[[Job], None]


class JobManager:
    def __init__(
        self, settings: Settings, service: TranscriptionService, store: JobStore, *, dispatch: Dispatch | None = None
    ):
        self.settings = settings
        self.service = service
        self.store = store
        self.dispatch = dispatch
        self.webhooks: WebhookSender | None = None
        if settings.webhook_secret and dispatch is not None:
            parse_secret(settings.webhook_secret)  # refuse a bad secret here too; the job runners sign
        elif settings.webhook_secret:
            self.webhooks = WebhookSender.from_settings(store, settings)
        self.runner: JobExecutor | None = None if dispatch is not None else JobExecutor(
            store,
            service,
            workers=settings.job_workers,
            max_attempts=settings.job_max_attempts,
            result_ttl_s=settings.job_result_ttl_s,
            clip_ttl_s=settings.clip_ttl_s,
            on_finished=self.webhooks.wake if self.webhooks else None,
        )

    @classmethod
    def open(
        cls,
        settings: Settings,
        service: TranscriptionService,
        store: JobStore | None = None,
        *,
        dispatch: Dispatch | None = None,
    ) -> JobManager:
        """Workers started and interrupted jobs recovered, over the given store or the SQLite one under the
        storage path (with a dispatcher: no workers here, and recovery is the dispatcher's side's)."""
        store = store or SqliteJobStore(settings.audio_storage_path / JOBS_DB, lease_s=settings.job_lease_s)
        return cls(settings, service, store, dispatch=dispatch).start()

    def start(self) -> "JobManager":
        if self.runner:
            self.runner.start()
        if self.webhooks:
            self.webhooks.start()
        return self

    def close(self) -> None:
        stopped = self.runner.close() if self.runner else True
        if self.webhooks:
            self.webhooks.close()
        if stopped:  # else a worker still finishing a batch would find its store closed
            self.store.close()

    def check_webhook_url(self, url: str) -> str:
        if not self.settings.webhook_secret:
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
        owner: str = "",
        job_id: str | None = None,
    ) -> Job:
        """Queue a transcription of a stored clip for `owner`. Options and webhook_url must already be
        checked. `job_id`: the id chosen before its clip was stored (a clip uploaded with the job names
        its job, so a crash between the two leaves a clip the retention sweep recognises as orphaned)."""
        job = Job(
            job_id=job_id or new_job_id(),
            status=JobStatus.queued,
            clip_id=clip.clip_id,
            owns_clip=owns_clip,
            owner=owner,
            options=options,
            format=format,
            created_at=datetime.now(timezone.utc),
            progress=Progress(done=0.0, total=clip.duration),
            webhook=Webhook(url=webhook_url, id=new_webhook_id()) if webhook_url else None,
        )
        job = self.store.create(job)
        if self.runner:
            self.runner.notify()
        else:
            try:
                self.dispatch(job)
            except Exception:  # noqa: BLE001 - the job is stored and stays queued: accepted, not lost
                log.exception("job %s: queued, but the dispatcher refused it; it stays queued for a retry", job.job_id)
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job; with `owner`, only that owner's (another's is JobNotFound, as a missing one: ids
        cannot be probed)."""
        job = self.store.get(job_id)
        if owner is not None and job.owner != owner:
            raise JobNotFound(f"no job with id {job_id}")
        return job

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        self.get(job_id, owner)
        return self.store.cancel(job_id)

    def deliveries(self, job_id: str, owner: str | None = None) -> list[DeliveryAttempt]:
        self.get(job_id, owner)
        return self.store.deliveries(job_id)
