"""Jobs on Modal: what the `run_job`, `deliver_webhook` and `sweep_jobs` functions do (functions/app.py
holds only their decorated shells).

    web (POST /api/transcriptions) --store.create--> modal.Dict --dispatch--> run_job.spawn(job_id)
    run_job      claim the job (compare-and-set in the Dict), reload the Volume, load the clip, run the
                 SAME pipeline through the ModalRunner (JobExecutor.run: progress, cancel, errors), store
                 the result; then deliver_webhook.spawn(job_id) if the job has a webhook
    deliver_webhook   shared/jobs/webhooks.py's WebhookSender.deliver, attempt after attempt with its backoff,
                 while the next attempt falls within this call's time budget
    sweep_jobs   on a schedule: jobs whose worker went silent (lease lapsed: it died or stalled) go back to
                 the queue (or fail after JOB_MAX_ATTEMPTS) and are spawned again; jobs queued for long (a lost spawn) are
                 spawned again; overdue webhooks get a deliverer; expired jobs and their uploads go, and
                 so do clips past CLIP_TTL_S and orphaned ones (shared/jobs/retention.py).

A job is never lost: it is in the Dict before the 202 answers, and anything that drops a spawn (a
failed `.spawn()`, a dead container, a timeout) leaves it queued or running under a lapsing lease, which
the sweep picks up. A job never runs twice at once unless a worker stalls past its lease (see
functions/dict_job_store.py), and it ends once whatever happens.

Retries: one mechanism, the job's own. run_job has no Modal retries: a run that dies (a crashed
container, a timeout) leaves the job running under a lease that lapses, and the sweep queues it again
(attempts counted against JOB_MAX_ATTEMPTS) and spawns it. Modal's retry of the input would be a second
count of the same attempts, and could not run sooner anyway: it cannot tell a dead run from a stalled
one, so it too would have to wait for the lease. A Modal FunctionCall id cannot replace the lease
either: it says when a call ended, not that a stalled one will never write again.

The spawn itself is a seam (`ModalSpawn` here; tests/modal_doubles.py's `LocalSpawn` runs the same
function bodies with `.local()` on a thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from functions.dict_job_store import DICT_ENTRY_TTL_S, DictJobStore
from functions.volume_clips import VolumeClipStore
from functions.volume_voices import VolumeVoiceStore
from shared.core.config import Settings
from shared.jobs.model import DeliveryAttempt, Job, JobNotFound, WebhookState, check_job_id
from shared.jobs.executor import JobExecutor
from shared.jobs.retention import sweep_clips
from shared.pipeline.runner import Runner
from shared.service.transcription import TranscriptionService
from shared.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)


class ModalSpawn:
    """`fn.spawn(*args)`: run a deployed function in the background; nothing waits for it."""

    def __init__(self, fn: Any):
        self.fn = fn

    def __call__(self, *args: Any) -> None:
        self.fn.spawn(*args)


class JobWorker:
    """One per container: the job store over the Dict, the clip store over the Volume, and the spawners
    of `run_job` and `deliver_webhook`."""

    def __init__(
        self,
        settings: Settings,
        store: DictJobStore,
        clips: VolumeClipStore,
        *,
        runner_factory: Callable[[], Runner],
        spawn_run: Callable[[str], None],
        spawn_deliver: Callable[[str], None],
        heartbeat_s: float = 30.0,
        deliver_budget_s: float = 600.0,
        redispatch_after_s: float = 600.0,
        overdue_after_s: float = 60.0,
    ):
        self.settings = settings
        self.store = store
        self.clips = clips
        self.voices = VolumeVoiceStore(clips)  # enrolled voices, beside the clips on the Volume
        self.runner_factory = runner_factory
        self.spawn_run = spawn_run
        self.spawn_deliver = spawn_deliver
        self.heartbeat_s = heartbeat_s
        self.deliver_budget_s = deliver_budget_s
        self.redispatch_after_s = redispatch_after_s
        self.overdue_after_s = overdue_after_s
        self._lock = threading.Lock()
        self._service: TranscriptionService | None = None
        self._sender: WebhookSender | None = None
        if settings.job_result_ttl_s > DICT_ENTRY_TTL_S / 2:
            log.warning(
                "JOB_RESULT_TTL_S=%.0f: modal.Dict drops entries untouched for 7 days, so jobs may vanish first",
                settings.job_result_ttl_s,
            )

    # --- what the web endpoint's JobManager calls ---

    def dispatch(self, job: Job) -> None:
        self.spawn_run(job.job_id)

    # --- shared parts, built once per container on first use ---

    @property
    def service(self) -> TranscriptionService:
        with self._lock:
            if self._service is None:
                self._service = TranscriptionService(self.settings, self.runner_factory(), self.clips, self.voices)
            return self._service

    def job_runner(self) -> JobExecutor:
        """The local job runner's logic (progress, cancel, errors, finish), without its threads."""
        return JobExecutor(
            self.store,
            self.service,
            max_attempts=self.settings.job_max_attempts,
            result_ttl_s=self.settings.job_result_ttl_s,
            on_finished=self.ended,
        )

    def ended(self, job: Job) -> None:
        """A job ended: its webhook, if it has one, goes to a deliverer."""
        if job.webhook and job.webhook.state is WebhookState.pending:
            try:
                self.spawn_deliver(job.job_id)
            except Exception:  # noqa: BLE001 - still pending in the store: the sweep delivers it
                log.exception("job %s: could not spawn its webhook delivery", job.job_id)

    # --- run_job ---

    def run(self, job_id: str) -> str:
        """Run one job to its end; return its status as this call leaves it."""
        check_job_id(job_id)
        started = time.monotonic()
        job = self._claim(job_id)
        if job is None:
            return self._status(job_id)
        self.clips.reload(missed_at=started)  # what other containers committed (the clip, normally)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, stop), daemon=True, name="job-heartbeat")
        beat.start()
        try:
            self.job_runner().run(job)
        finally:
            stop.set()
            beat.join()
        return self._status(job_id)

    def _claim(self, job_id: str) -> Job | None:
        """The job, claimed by this call; None when there is nothing for it to do: the job ended, is gone,
        or runs elsewhere (a duplicate spawn). A run that died is not this call's to take over: its
        lease lapses and the sweep queues the job again and spawns it."""
        try:
            return self.store.claim(job_id)
        except JobNotFound:
            log.warning("job %s: no such job (expired?)", job_id)
            return None

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                if not self.store.heartbeat(job_id):
                    return  # cancelled or taken over: the runner stops at its next progress report
            except Exception:  # noqa: BLE001 - a missed beat is not fatal; the lease has slack
                log.exception("job %s: heartbeat failed", job_id)

    def _status(self, job_id: str) -> str:
        try:
            return self.store.get(job_id).status.value
        except JobNotFound:
            return "gone"

    # --- deliver_webhook ---

    @property
    def sender(self) -> WebhookSender:
        with self._lock:
            if self._sender is None:
                if not self.settings.webhook_secret:
                    raise RuntimeError("WEBHOOK_SECRET is not set where webhooks are delivered")
                # only its deliver() is used: the attempt, the signature, the retry decision
                self._sender = WebhookSender.from_settings(self.store, self.settings, workers=1)
            return self._sender

    def deliver(self, job_id: str) -> str:
        """Send the job's webhook, retrying with the sender's backoff while the next attempt is due within
        this call's budget; a later one is left to the sweep. Returns the webhook's state."""
        check_job_id(job_id)
        deadline = time.monotonic() + self.deliver_budget_s
        if not self.settings.webhook_secret:
            return self._cannot_sign(job_id)
        while True:
            try:
                job = self.store.get(job_id)
            except JobNotFound:
                return "gone"
            hook = job.webhook
            if hook is None or hook.state is not WebhookState.pending:
                return hook.state.value if hook and hook.state else "none"
            wait = (hook.next_attempt_at.timestamp() if hook.next_attempt_at else 0.0) - time.time()
            if wait > deadline - time.monotonic():
                return "pending"  # the sweep hands it to a deliverer when it is due
            if wait > 0:
                time.sleep(wait)
                continue  # read again: another deliverer may have sent it meanwhile
            self.sender.deliver(job)

    def _cannot_sign(self, job_id: str) -> str:
        """Misconfigured (no WEBHOOK_SECRET where webhooks are delivered): record why, end the retries,
        so the job can still expire."""
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            return "gone"
        if not job.webhook or job.webhook.state is not WebhookState.pending:
            return job.webhook.state.value if job.webhook and job.webhook.state else "none"
        log.error("job %s: WEBHOOK_SECRET is not set in this function's Secret; the webhook is not sent", job_id)
        attempt = DeliveryAttempt(
            attempt=len(self.store.deliveries(job_id)) + 1,
            at=datetime.now(timezone.utc),
            url=job.webhook.url,
            error="not_signed",  # the log line above says why
            duration_ms=0.0,
            outcome="failed",
        )
        self.store.add_delivery(job_id, attempt, None)
        return WebhookState.failed.value

    # --- sweep_jobs ---

    def sweep(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        counts = {"recovered": 0, "failed": 0, "redispatched": 0, "webhooks": 0, "expired": 0, "clips": 0}
        spawned: set[str] = set()
        for job in self.store.recover(self.settings.job_max_attempts):
            if job.finished:
                counts["failed"] += 1
                self.ended(job)
            else:
                counts["recovered"] += 1
                self._respawn(job.job_id, spawned)
        for job in self.store.queued_before(now - self.redispatch_after_s):
            if job.job_id not in spawned:
                counts["redispatched"] += 1
                self._respawn(job.job_id, spawned)
        for job in self.store.due_webhooks(now - self.overdue_after_s, limit=1000):
            counts["webhooks"] += 1
            self.ended(job)
        counts["expired"] = len(self.job_runner().delete_expired(now))
        self.clips.reload()  # every container's clips, not only those this one saw
        counts["clips"] = sweep_clips(self.clips, self.store, now=now, clip_ttl_s=self.settings.clip_ttl_s).total
        if any(counts.values()):
            log.info("sweep: %s", counts)
        return counts

    def _respawn(self, job_id: str, spawned: set[str]) -> None:
        spawned.add(job_id)
        try:
            self.spawn_run(job_id)
        except Exception:  # noqa: BLE001 - still queued: the next sweep tries again
            log.exception("job %s: could not spawn it again", job_id)
