"""JobStore on SQLite (stdlib): one file under the storage path, WAL journal, synchronous=FULL, so a job
that was accepted survives a crash of the process or the machine.

One connection behind a lock: every call is a short transaction. A state change is load, transition
(shared/jobs/transitions.py), save, inside one `BEGIN IMMEDIATE` transaction: the write lock is taken
before the read, so the change is atomic even if another process opens the same file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from shared.core.domain import OutputFormat, TranscribeOptions, Transcript
from shared.jobs import transitions as T
from shared.core.errors import JobNotFound
from shared.jobs.model import ENDED, DeliveryAttempt, Job, JobError, JobStatus, Progress, Webhook
from shared.jobs.store import JobStore, Step
from shared.jobs.transitions import Refusal, Stored

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
    webhook_next_at REAL,
    run             INTEGER NOT NULL DEFAULT 0,
    lease_until     REAL,
    owner           TEXT NOT NULL DEFAULT '',
    holder          TEXT
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

# columns added since the first schema: (name, definition), added to older files at open
_ADDED = (("run", "INTEGER NOT NULL DEFAULT 0"), ("lease_until", "REAL"), ("owner", "TEXT NOT NULL DEFAULT ''"),
          ("holder", "TEXT"))
_COLUMNS = (
    "job_id", "status", "clip_id", "owns_clip", "options", "format", "created_at", "started_at", "finished_at",
    "attempts", "progress_done", "progress_total", "result", "error_code", "error_message", "webhook_url",
    "webhook_id", "webhook_state", "webhook_next_at", "run", "lease_until", "owner", "holder",
)  # fmt: skip
_ENDED = tuple(s.value for s in ENDED)
_ENDED_MARKS = ",".join("?" * len(_ENDED))


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc)


def _ts(d: datetime | None) -> float | None:
    return None if d is None else d.timestamp()


class SqliteJobStore(JobStore):
    def __init__(self, path: Path, *, clock=time.time, lease_s: float = 120.0, instance_id: str | None = None):
        super().__init__(clock=clock, lease_s=lease_s, instance_id=instance_id)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(SCHEMA)
            have = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for name, definition in _ADDED:
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

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

    # --- load, change, save ---

    def _insert(self, stored: Stored) -> None:
        with self._tx() as db:
            marks = ",".join("?" * len(_COLUMNS))
            db.execute(f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({marks})", _values(stored))

    def _load(self, job_id: str) -> Stored:
        with self._lock:
            return _stored(self._row(self._db, job_id))

    def _step(self, db: sqlite3.Connection, job_id: str, step: Step) -> tuple[Stored, Refusal | None]:
        current = _stored(self._row(db, job_id))
        new = step(current)
        if isinstance(new, Refusal):
            return current, new
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
        db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*_values(new)[1:], job_id))
        return new, None

    def _change(self, job_id: str, step: Step) -> tuple[Stored, Refusal | None]:
        with self._tx() as db:
            return self._step(db, job_id, step)

    def _queued_ids(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE status = ? ORDER BY created_at, rowid", (JobStatus.queued.value,)
            )
            return [r["job_id"] for r in rows]

    def _running_ids(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT job_id FROM jobs WHERE status = ?", (JobStatus.running.value,))
            return [r["job_id"] for r in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._lock:  # a read: no write transaction
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}

    def delete_expired(self, finished_before: float) -> list[Job]:
        with self._tx() as db:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE status IN ({_ENDED_MARKS}) AND finished_at < ?"
                " AND (webhook_state IS NULL OR webhook_state != 'pending')",
                (*_ENDED, finished_before),
            ).fetchall()
            db.executemany("DELETE FROM jobs WHERE job_id = ?", [(r["job_id"],) for r in rows])
            return [_stored(r).job for r in rows]

    # --- webhooks ---
    def due_webhooks(self, now: float, limit: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= ?"
                " ORDER BY webhook_next_at LIMIT ?",
                (now, limit),
            ).fetchall()
            return [_stored(r).job for r in rows]

    def add_delivery(self, job_id: str, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        with self._tx() as db:  # the attempt and the webhook's new state together
            db.execute(
                "INSERT INTO deliveries (job_id, attempt, at, url, status_code, error, duration_ms, outcome)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    job_id, attempt.attempt, _ts(attempt.at), attempt.url, attempt.status_code, attempt.error,
                    attempt.duration_ms, attempt.outcome,
                ),
            )  # fmt: skip
            self._step(db, job_id, lambda s: T.delivered(s, outcome=attempt.outcome, retry_at=retry_at))

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


def _values(s: Stored) -> tuple:
    job, hook = s.job, s.job.webhook
    return (
        job.job_id, job.status.value, job.clip_id, int(job.owns_clip), job.options.model_dump_json(),
        job.format.value, _ts(job.created_at), _ts(job.started_at), _ts(job.finished_at), job.attempts,
        job.progress.done, job.progress.total, job.result.model_dump_json() if job.result else None,
        job.error.code if job.error else None, job.error.message if job.error else None,
        hook.url if hook else None, hook.id if hook else None,
        hook.state.value if hook and hook.state else None, _ts(hook.next_attempt_at) if hook else None,
        s.run, s.lease_until, job.owner, s.holder,
    )  # fmt: skip


def _stored(r: sqlite3.Row) -> Stored:
    return Stored(_job(r), run=r["run"], lease_until=r["lease_until"], holder=r["holder"])


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
        owner=r["owner"],
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
