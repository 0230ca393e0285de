"""JobStore on SQLite (stdlib): one file under the storage path, WAL journal, synchronous=FULL, so a job
that was accepted survives a crash of the process or the machine.

One connection behind a lock: every call is a short transaction, and `BEGIN IMMEDIATE` keeps each state
transition atomic even if another process opens the same file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from shared.domain import OutputFormat, TranscribeOptions, Transcript
from shared.jobs.model import (
    DeliveryAttempt,
    Job,
    JobConflict,
    JobError,
    JobNotFound,
    JobStatus,
    Progress,
    Webhook,
    WebhookState,
)
from shared.jobs.store import JobStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    clip_id         TEXT NOT NULL,
    owns_clip       INTEGER NOT NULL DEFAULT 0,
    options         TEXT NOT NULL,
    format          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    progress_done   REAL NOT NULL DEFAULT 0,
    progress_total  REAL,
    result          TEXT,
    error_code      TEXT,
    error_message   TEXT,
    webhook_url     TEXT,
    webhook_id      TEXT,
    webhook_state   TEXT,
    webhook_next_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_webhook ON jobs (webhook_state, webhook_next_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          REAL NOT NULL,
    url         TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms REAL NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_job ON deliveries (job_id, id);
"""

_ENDED = (JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value)


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc)


def _ts(d: datetime | None) -> float | None:
    return None if d is None else d.timestamp()


class SqliteJobStore(JobStore):
    def __init__(self, path: Path, *, clock=time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, db: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return row

    # --- jobs ---
    def create(self, job: Job) -> Job:
        hook = job.webhook
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (job_id, status, clip_id, owns_clip, options, format, created_at, attempts,"
                " progress_done, progress_total, webhook_url, webhook_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.job_id, job.status.value, job.clip_id, int(job.owns_clip), job.options.model_dump_json(),
                    job.format.value, _ts(job.created_at), job.attempts, job.progress.done, job.progress.total,
                    hook.url if hook else None, hook.id if hook else None,
                ),
            )  # fmt: skip
            return _job(self._row(db, job.job_id))

    def get(self, job_id: str) -> Job:
        with self._lock:
            return _job(self._row(self._db, job_id))

    def claim_next(self) -> Job | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT job_id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ? WHERE job_id = ?",
                (self.clock(), row["job_id"]),
            )
            return _job(self._row(db, row["job_id"]))

    def update_progress(self, job_id: str, done: float, total: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET progress_done = ?, progress_total = ? WHERE job_id = ? AND status = 'running'",
                (done, total, job_id),
            )
            return cur.rowcount == 1

    def finish(self, job_id: str, result: Transcript) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'succeeded', finished_at = ?, result = ?, progress_done = progress_total"
                " WHERE job_id = ? AND status = 'running'",
                (self.clock(), result.model_dump_json(), job_id),
            )
            self._webhook_due(db, job_id)
            return cur.rowcount == 1

    def fail(self, job_id: str, error: JobError) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = ?, error_message = ?"
                " WHERE job_id = ? AND status IN ('queued', 'running')",
                (self.clock(), error.code, error.message, job_id),
            )
            self._webhook_due(db, job_id)
            return cur.rowcount == 1

    def _webhook_due(self, db: sqlite3.Connection, job_id: str) -> None:
        # same transaction as the state change: a crash cannot end a job and lose its callback
        db.execute(
            "UPDATE jobs SET webhook_state = 'pending', webhook_next_at = finished_at"
            " WHERE job_id = ? AND webhook_url IS NOT NULL AND webhook_state IS NULL AND status IN (?, ?)",
            (job_id, JobStatus.succeeded.value, JobStatus.failed.value),
        )

    def count_by_status(self) -> dict[str, int]:
        with self._lock:  # a read: no write transaction
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}

    def cancel(self, job_id: str) -> Job:
        with self._tx() as db:
            job = _job(self._row(db, job_id))
            if job.finished:
                raise JobConflict(f"job {job_id} already {job.status.value}", code="job_finished")
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE job_id = ?", (self.clock(), job_id)
            )
            return _job(self._row(db, job_id))

    def release(self, job_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), started_at = NULL,"
                " progress_done = 0 WHERE job_id = ? AND status = 'running'",
                (job_id,),
            )
            return cur.rowcount == 1

    def recover(self, max_attempts: int) -> list[Job]:
        with self._tx() as db:
            ids = [r["job_id"] for r in db.execute("SELECT job_id FROM jobs WHERE status = 'running'")]
            for job_id in ids:
                attempts = self._row(db, job_id)["attempts"]
                if attempts >= max_attempts:
                    db.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = 'interrupted',"
                        " error_message = ? WHERE job_id = ?",
                        (
                            self.clock(),
                            f"the server stopped while the job ran, {attempts} time(s); "
                            f"not retried after {max_attempts} attempt(s) (JOB_MAX_ATTEMPTS)",
                            job_id,
                        ),
                    )
                    self._webhook_due(db, job_id)
                else:
                    db.execute(
                        "UPDATE jobs SET status = 'queued', started_at = NULL, progress_done = 0 WHERE job_id = ?",
                        (job_id,),
                    )
            return [_job(self._row(db, job_id)) for job_id in ids]

    def delete_expired(self, finished_before: float) -> list[Job]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status IN (?, ?, ?) AND finished_at < ?"
                " AND (webhook_state IS NULL OR webhook_state != 'pending')",
                (*_ENDED, finished_before),
            ).fetchall()
            db.executemany("DELETE FROM jobs WHERE job_id = ?", [(r["job_id"],) for r in rows])
            return [_job(r) for r in rows]

    # --- webhooks ---
    def due_webhooks(self, now: float, limit: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= ?"
                " ORDER BY webhook_next_at LIMIT ?",
                (now, limit),
            ).fetchall()
            return [_job(r) for r in rows]

    def add_delivery(self, job_id: str, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        if attempt.outcome == "delivered":
            state = WebhookState.delivered
        elif retry_at is not None:
            state = WebhookState.pending
        else:
            state = WebhookState.failed
        with self._tx() as db:
            db.execute(
                "INSERT INTO deliveries (job_id, attempt, at, url, status_code, error, duration_ms, outcome)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    job_id, attempt.attempt, _ts(attempt.at), attempt.url, attempt.status_code, attempt.error,
                    attempt.duration_ms, attempt.outcome,
                ),
            )  # fmt: skip
            db.execute(
                "UPDATE jobs SET webhook_state = ?, webhook_next_at = ? WHERE job_id = ?",
                (state.value, retry_at if state is WebhookState.pending else None, job_id),
            )

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        with self._lock:
            self._row(self._db, job_id)
            rows = self._db.execute("SELECT * FROM deliveries WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [
            DeliveryAttempt(
                attempt=r["attempt"], at=_dt(r["at"]), url=r["url"], status_code=r["status_code"],
                error=r["error"], duration_ms=r["duration_ms"], outcome=r["outcome"],
            )
            for r in rows
        ]  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(r: sqlite3.Row) -> Job:
    webhook = None
    if r["webhook_url"]:
        webhook = Webhook(
            url=r["webhook_url"],
            id=r["webhook_id"],
            state=r["webhook_state"],
            next_attempt_at=_dt(r["webhook_next_at"]),
        )
    return Job(
        job_id=r["job_id"],
        status=JobStatus(r["status"]),
        clip_id=r["clip_id"],
        owns_clip=bool(r["owns_clip"]),
        options=TranscribeOptions.model_validate_json(r["options"]),
        format=OutputFormat(r["format"]),
        created_at=_dt(r["created_at"]),
        started_at=_dt(r["started_at"]),
        finished_at=_dt(r["finished_at"]),
        attempts=r["attempts"],
        progress=Progress(done=r["progress_done"], total=r["progress_total"]),
        result=Transcript.model_validate_json(r["result"]) if r["result"] else None,
        error=JobError(code=r["error_code"], message=r["error_message"]) if r["error_code"] else None,
        webhook=webhook,
    )
