"""The JobStore port on a modal.Dict: job state shared by every container of the deployment.

modal.Dict (modal 1.6.4) is a durable key-value service without transactions. What it offers, and all
this store uses (see `KeyValue`): get, put, put(..., skip_if_exists=True) (create-if-absent: it answers
whether the key was created), pop, and keys(). Entries expire after 7 days without a read or a write
(so JOB_RESULT_TTL_S must stay well under that), values have no per-object size limit we come near.

How a state transition stays atomic without transactions: every job is a chain of immutable versions.

    job:<id>:v:1, job:<id>:v:2, ...   the job after each transition (JSON, the transcript left out)

A transition reads the latest version n, decides, and writes version n+1 with skip_if_exists=True.
Exactly one writer creates n+1; a writer that loses reads again and decides again. That is
compare-and-set on the version number, so every transition is linearizable per job, as the SQLite
adapter's `BEGIN IMMEDIATE` transactions are:
- a job is claimed by one worker only (two claimers cannot both turn version n "queued" into "running");
- a job ends once: finish, fail, cancel and recovery race for the same version, one wins, the others
  see the ended job and report that they did not apply (a worker that lost to a cancel simply stops);
- progress from a worker whose claim was taken over (see leases) is refused, so it stops too.

Other keys of a job (all derived from, or named by, its versions):
    job:<id>:head               hint: the latest version number known. Readers start there and read
                                forward until a version is missing, so a stale hint costs a read, never
                                a wrong answer. It is written last at creation and popped first at
                                deletion, so it is also what makes a job exist.
    job:<id>:result:<seq>       the transcript of run <seq>, written before the version that says
                                "succeeded" names it (results stay out of the versions: one copy).
    job:<id>:lease:<seq>        until when run <seq> is known alive; only its worker writes it.
    job:<id>:delivery:<n>       webhook attempt n, created once (a concurrent attempt takes n+1).

Indexes for the scans (keys only; a scan lists keys, then reads the jobs it needs), always a
superset of what they index, and repaired by the scans:
    open:<created_at>:<id>      jobs not ended yet (written before the job, removed after it ends)
    ended:<finished_at>:<id>    ended jobs, for expiry
    hook:<id>                   jobs whose webhook is pending

Leases: a worker that claims run <seq> keeps job:<id>:lease:<seq> ahead of the clock (progress and a
heartbeat). `recover` puts a running job back in the queue (or fails it after max_attempts) only once
its lease has lapsed. lease_s=0 makes every running job recoverable at once: the local semantics of
"recover at start-up", which the shared store contract tests use.

What this does not give: a worker silent for longer than its lease (a stalled container) is taken for
dead, so its job may run twice; only one run can end it, and the other stops at its next progress
report. A webhook attempt may be sent twice if two deliverers run at once (receivers de-duplicate on
webhook-id, as Standard Webhooks asks). Keys left behind by a deletion interrupted half way, or by a
worker writing long after its job was deleted, are never read again and expire after 7 days.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from shared.domain import Transcript
from shared.jobs.model import (
    DeliveryAttempt,
    Job,
    JobConflict,
    JobError,
    JobNotFound,
    JobStatus,
    Progress,
    WebhookState,
)
from shared.jobs.store import JobStore

log = logging.getLogger(__name__)

_MISSING = object()
CAS_TRIES = 100
DICT_ENTRY_TTL_S = 7 * 86400  # modal.Dict drops an entry after 7 days without a read or a write


class KeyValue(Protocol):
    """The modal.Dict methods this store uses; MemoryDict implements exactly these."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool: ...

    def pop(self, key: Any, default: Any = ...) -> Any: ...

    def keys(self) -> Iterator[Any]: ...


class MemoryDict:
    """An in-memory stand-in for modal.Dict, for tests and `python -m functions.local_serve`: the real
    one is a Modal service, which cannot run without an account and a network.

    It has exactly the methods DictJobStore uses, with the semantics modal 1.6.4 documents for them:
    values are serialized on the way in and out (a changed object is not changed in the Dict until it
    is put again), `put(skip_if_exists=True)` is an atomic create-if-absent that answers whether it
    created the key, `pop` without a default raises KeyError, and `keys()` comes back in no particular
    order (shuffled here, so nothing can come to depend on an order). `jitter_s` sleeps a random time
    before each call, to make concurrent callers interleave in tests.
    """

    def __init__(self, *, jitter_s: float = 0.0):
        self.jitter_s = jitter_s
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def _pause(self) -> None:
        if self.jitter_s:
            time.sleep(random.uniform(0, self.jitter_s))

    def get(self, key: Any, default: Any = None) -> Any:
        self._pause()
        with self._lock:
            raw = self._data.get(pickle.dumps(key))
        return default if raw is None else pickle.loads(raw)

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        k, v = pickle.dumps(key), pickle.dumps(value)
        self._pause()
        with self._lock:
            if skip_if_exists and k in self._data:
                return False
            self._data[k] = v
            return True

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        self._pause()
        with self._lock:
            raw = self._data.pop(pickle.dumps(key), None)
        if raw is None:
            if default is _MISSING:
                raise KeyError(f"{key} not in dict")
            return default
        return pickle.loads(raw)

    def keys(self) -> Iterator[Any]:
        self._pause()
        with self._lock:
            keys = [pickle.loads(k) for k in self._data]
        random.shuffle(keys)
        return iter(keys)

    def __len__(self) -> int:  # for tests; DictJobStore does not use it
        with self._lock:
            return len(self._data)


# --- keys -------------------------------------------------------------------------------------------


def _head(job_id: str) -> str:
    return f"job:{job_id}:head"


def _version(job_id: str, n: int) -> str:
    return f"job:{job_id}:v:{n}"


def _result(job_id: str, seq: int) -> str:
    return f"job:{job_id}:result:{seq}"


def _lease(job_id: str, seq: int) -> str:
    return f"job:{job_id}:lease:{seq}"


def _delivery(job_id: str, n: int) -> str:
    return f"job:{job_id}:delivery:{n}"


def _stamp(t: float) -> str:
    return f"{t:020.6f}"  # fixed width: keys sort by time


def _open_key(job: Job) -> str:
    return f"open:{_stamp(job.created_at.timestamp())}:{job.job_id}"


def _ended_key(job: Job) -> str:
    return f"ended:{_stamp(job.finished_at.timestamp())}:{job.job_id}"


def _hook_key(job_id: str) -> str:
    return f"hook:{job_id}"


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


@dataclass(frozen=True)
class _Version:
    """One version of a job: the Job without its transcript, the number of runs ever claimed (it names
    their lease and result keys), and which run's result the job shows."""

    job: Job
    seq: int = 0
    result_seq: int | None = None

    def dumps(self) -> str:
        job = self.job.model_dump(mode="json", exclude={"result"})
        return json.dumps({"job": job, "seq": self.seq, "result_seq": self.result_seq})

    @classmethod
    def loads(cls, raw: str) -> "_Version":
        data = json.loads(raw)
        return cls(Job.model_validate(data["job"]), data["seq"], data["result_seq"])

    def update(self, **changes: Any) -> "_Version":
        return replace(self, job=self.job.model_copy(update=changes))


class DictJobStore(JobStore):
    def __init__(
        self,
        d: KeyValue,
        *,
        clock: Callable[[], float] = time.time,
        lease_s: float = 0.0,
        orphan_after_s: float = 600.0,
    ):
        """`d`: a modal.Dict (or MemoryDict). `lease_s`: how long a running job's worker is trusted
        without a sign of life. `orphan_after_s`: index entries of a creation that never completed are
        removed after this long."""
        self.d = d
        self.clock = clock
        self.lease_s = lease_s
        self.orphan_after_s = orphan_after_s
        self._owned: dict[str, int] = {}  # job_id -> the run this store's worker claimed
        self._owned_lock = threading.Lock()

    # --- reading ---

    def _load(self, job_id: str) -> tuple[int, _Version]:
        """The latest version: from the head hint, forward until a version is missing."""
        head = self.d.get(_head(job_id))
        if head is None:
            raise JobNotFound(f"no job with id {job_id}")
        n = int(head)
        raw = self.d.get(_version(job_id, n))
        if raw is None:  # deleted since the head was read
            raise JobNotFound(f"no job with id {job_id}")
        while (newer := self.d.get(_version(job_id, n + 1))) is not None:
            n, raw = n + 1, newer
        return n, _Version.loads(raw)

    def _full(self, v: _Version) -> Job:
        result = None
        if v.result_seq is not None:
            raw = self.d.get(_result(v.job.job_id, v.result_seq))
            result = Transcript.model_validate_json(raw) if raw is not None else None
        return v.job.model_copy(update={"result": result})

    def _cas(self, job_id: str, change: Callable[[_Version], _Version | None]) -> tuple[_Version, bool]:
        """Apply `change` to the latest version as one atomic transition. `change` returns the next
        version, or None when the transition does not apply (the job is left as it is)."""
        for attempt in range(CAS_TRIES):
            n, current = self._load(job_id)
            new = change(current)
            if new is None:
                return current, False
            if self.d.put(_version(job_id, n + 1), new.dumps(), skip_if_exists=True):
                self.d.put(_head(job_id), n + 1)
                return new, True
            time.sleep(random.uniform(0, 0.001 * (attempt + 1)))  # another writer won n+1: read again
        raise RuntimeError(f"job {job_id}: no transition after {CAS_TRIES} tries (contention)")

    def _index(self, prefix: str) -> Iterable[tuple[str, float | None, str]]:
        """(key, time, job_id) of the index keys with this prefix."""
        for key in self.d.keys():
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            parts = key.split(":")
            if len(parts) == 3:
                yield key, float(parts[1]), parts[2]
            elif len(parts) == 2:
                yield key, None, parts[1]

    def _mine(self, job_id: str) -> int | None:
        with self._owned_lock:
            return self._owned.get(job_id)

    def _forget(self, job_id: str) -> None:
        with self._owned_lock:
            self._owned.pop(job_id, None)

    # --- jobs ---

    def create(self, job: Job) -> Job:
        first = _Version(job.model_copy(update={"result": None}))
        self.d.put(_open_key(job), "")  # the index first: it never misses a job
        if not self.d.put(_version(job.job_id, 1), first.dumps(), skip_if_exists=True):
            raise RuntimeError(f"job id {job.job_id} is taken")
        self.d.put(_head(job.job_id), 1)  # now the job exists
        return _Version.loads(first.dumps()).job

    def get(self, job_id: str) -> Job:
        return self._full(self._load(job_id)[1])

    def claim(self, job_id: str) -> Job | None:
        """queued -> running for this job (attempts + 1); None when it is not queued (another worker
        has it, or it ended)."""
        now = self.clock()

        def change(v: _Version) -> _Version | None:
            if v.job.status is not JobStatus.queued:
                return None
            return replace(
                v.update(status=JobStatus.running, attempts=v.job.attempts + 1, started_at=_dt(now)), seq=v.seq + 1
            )

        v, won = self._cas(job_id, change)
        if not won:
            return None
        with self._owned_lock:
            self._owned[job_id] = v.seq
        self.d.put(_lease(job_id, v.seq), now + self.lease_s)
        return v.job

    def claim_next(self) -> Job | None:
        for _, _, job_id in sorted(self._index("open:")):
            try:
                job = self.claim(job_id)
            except JobNotFound:
                continue
            if job is not None:
                return job
        return None

    def _owner_may_write(self, v: _Version, mine: int | None) -> bool:
        """A worker writes to a job only while its own run is the running one."""
        return v.job.status is JobStatus.running and (mine is None or v.seq == mine)

    def heartbeat(self, job_id: str) -> bool:
        """Keep this store's run of the job alive; False when it is no longer the running one."""
        mine = self._mine(job_id)
        try:
            _, v = self._load(job_id)
        except JobNotFound:
            return False
        if mine is None or not self._owner_may_write(v, mine):
            return False
        self.d.put(_lease(job_id, mine), self.clock() + self.lease_s)
        return True

    def update_progress(self, job_id: str, done: float, total: float) -> bool:
        mine = self._mine(job_id)

        def change(v: _Version) -> _Version | None:
            if not self._owner_may_write(v, mine):
                return None
            return v.update(progress=Progress(done=done, total=total))

        v, won = self._cas(job_id, change)
        if won and mine is not None:
            self.d.put(_lease(job_id, mine), self.clock() + self.lease_s)
        return won

    def finish(self, job_id: str, result: Transcript) -> bool:
        mine = self._mine(job_id)
        _, v = self._load(job_id)
        if not self._owner_may_write(v, mine):
            return False
        seq = v.seq
        self.d.put(_result(job_id, seq), result.model_dump_json())  # before any version names it
        now = self.clock()

        def change(v: _Version) -> _Version | None:
            if v.job.status is not JobStatus.running or v.seq != seq:
                return None
            progress = Progress(done=v.job.progress.total or v.job.progress.done, total=v.job.progress.total)
            ended = v.update(status=JobStatus.succeeded, finished_at=_dt(now), progress=progress)
            return replace(_webhook_due(ended, now), result_seq=seq)

        v, won = self._cas(job_id, change)
        if won:
            self._ended(v)
            self._forget(job_id)
        return won

    def fail(self, job_id: str, error: JobError) -> bool:
        mine = self._mine(job_id)
        now = self.clock()

        def change(v: _Version) -> _Version | None:
            if mine is not None and not self._owner_may_write(v, mine):
                return None
            if v.job.status not in (JobStatus.queued, JobStatus.running):
                return None
            return _webhook_due(v.update(status=JobStatus.failed, finished_at=_dt(now), error=error), now)

        v, won = self._cas(job_id, change)
        if won:
            self._ended(v)
            self._forget(job_id)
        return won

    def cancel(self, job_id: str) -> Job:
        now = self.clock()

        def change(v: _Version) -> _Version:
            if v.job.finished:
                raise JobConflict(f"job {job_id} already {v.job.status.value}", code="job_finished")
            return v.update(status=JobStatus.cancelled, finished_at=_dt(now))

        v, _ = self._cas(job_id, change)
        self._ended(v)
        return self._full(v)

    def release(self, job_id: str) -> bool:
        mine = self._mine(job_id)

        def change(v: _Version) -> _Version | None:
            if not self._owner_may_write(v, mine):
                return None
            progress = Progress(done=0.0, total=v.job.progress.total)
            attempts = max(v.job.attempts - 1, 0)
            return v.update(status=JobStatus.queued, attempts=attempts, started_at=None, progress=progress)

        _, won = self._cas(job_id, change)
        if won:
            self._forget(job_id)
        return won

    # --- leases and recovery ---

    def _lease_lapsed(self, v: _Version, now: float) -> bool:
        until = self.d.get(_lease(v.job.job_id, v.seq))
        if until is None:  # the worker died between its claim and its first lease
            until = (v.job.started_at.timestamp() if v.job.started_at else 0.0) + self.lease_s
        return float(until) <= now

    def lease_lapsed(self, job_id: str) -> bool:
        """True when the job runs under a claim whose worker has shown no sign of life for lease_s."""
        _, v = self._load(job_id)
        return v.job.status is JobStatus.running and self._lease_lapsed(v, self.clock())

    def recover_job(self, job_id: str, max_attempts: int) -> Job | None:
        """A running job whose lease lapsed -> queued again, or failed once it used max_attempts.
        None when it is not running under a lapsed lease (any more)."""
        now = self.clock()
        _, seen = self._load(job_id)
        if seen.job.status is not JobStatus.running or not self._lease_lapsed(seen, now):
            return None

        def change(v: _Version) -> _Version | None:
            if v.job.status is not JobStatus.running or v.seq != seen.seq:
                return None
            attempts = v.job.attempts
            if attempts >= max_attempts:
                message = (
                    f"the worker stopped while the job ran, {attempts} time(s); "
                    f"not retried after {max_attempts} attempt(s) (JOB_MAX_ATTEMPTS)"
                )
                failed = v.update(
                    status=JobStatus.failed, finished_at=_dt(now), error=JobError(code="interrupted", message=message)
                )
                return _webhook_due(failed, now)
            return v.update(
                status=JobStatus.queued, started_at=None, progress=Progress(done=0.0, total=v.job.progress.total)
            )

        v, won = self._cas(job_id, change)
        if not won:
            return None
        if v.job.finished:
            self._ended(v)
        return self._full(v)

    def recover(self, max_attempts: int) -> list[Job]:
        now = self.clock()
        changed = []
        for key, created, job_id in sorted(self._index("open:")):
            try:
                _, v = self._load(job_id)
            except JobNotFound:
                if created is not None and created < now - self.orphan_after_s:
                    self.d.pop(key, None)  # a creation that never completed: no job was accepted
                continue
            if v.job.finished:
                self._ended(v)  # a crash came between the end and its index entries
                continue
            job = self.recover_job(job_id, max_attempts)
            if job is not None:
                changed.append(job)
        return changed

    def queued_before(self, created_before: float) -> list[Job]:
        """Jobs still queued that were created before the given time (oldest first)."""
        out = []
        for _, created, job_id in sorted(self._index("open:")):
            if created is None or created >= created_before:
                continue
            try:
                _, v = self._load(job_id)
            except JobNotFound:
                continue
            if v.job.status is JobStatus.queued:
                out.append(v.job)
        return out

    def _ended(self, v: _Version) -> None:
        """Index entries of an ended job (idempotent): ended, webhook pending, no longer open."""
        self.d.put(_ended_key(v.job), "")
        if v.job.webhook and v.job.webhook.state is WebhookState.pending:
            self.d.put(_hook_key(v.job.job_id), "")
        self.d.pop(_open_key(v.job), None)

    def delete_expired(self, finished_before: float) -> list[Job]:
        deleted = []
        for key, finished, job_id in sorted(self._index("ended:")):
            if finished is None or finished >= finished_before:
                continue
            try:
                n, v = self._load(job_id)
            except JobNotFound:  # a deletion interrupted after the head went: its leftovers expire
                self.d.pop(key, None)
                continue
            hook = v.job.webhook
            if not v.job.finished or v.job.finished_at.timestamp() >= finished_before:
                continue
            if hook and hook.state is WebhookState.pending:
                continue
            job = v.job  # without its transcript: the caller needs the clip, not the text
            self._purge(job_id, n, v)
            self.d.pop(key, None)
            deleted.append(job)
        return deleted

    def _purge(self, job_id: str, n: int, v: _Version) -> None:
        self.d.pop(_head(job_id), None)  # first: the job is gone for readers
        for seq in range(1, v.seq + 1):
            self.d.pop(_result(job_id, seq), None)
            self.d.pop(_lease(job_id, seq), None)
        i = 1
        while self.d.pop(_delivery(job_id, i), None) is not None:
            i += 1
        for i in range(1, n + 1):
            self.d.pop(_version(job_id, i), None)
        self.d.pop(_hook_key(job_id), None)
        self.d.pop(_open_key(v.job), None)

    # --- webhooks ---

    def due_webhooks(self, now: float, limit: int) -> list[Job]:
        due = []
        for key, _, job_id in self._index("hook:"):
            try:
                _, v = self._load(job_id)
            except JobNotFound:
                self.d.pop(key, None)
                continue
            hook = v.job.webhook
            if not hook or hook.state is not WebhookState.pending:
                self.d.pop(key, None)  # delivered or failed since: repair the index
                continue
            if hook.next_attempt_at is not None and hook.next_attempt_at.timestamp() <= now:
                due.append(v)
        due.sort(key=lambda v: v.job.webhook.next_attempt_at)
        return [self._full(v) for v in due[:limit]]

    def add_delivery(self, job_id: str, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        if attempt.outcome == "delivered":
            state = WebhookState.delivered
        elif retry_at is not None:
            state = WebhookState.pending
        else:
            state = WebhookState.failed
        self._load(job_id)  # JobNotFound before anything is written
        number = attempt.attempt
        while not self.d.put(_delivery(job_id, number), _numbered(attempt, number), skip_if_exists=True):
            number += 1  # a concurrent deliverer recorded this number: keep both attempts

        def change(v: _Version) -> _Version | None:
            if v.job.webhook is None:
                return None
            next_at = _dt(retry_at) if state is WebhookState.pending else None
            return v.update(webhook=v.job.webhook.model_copy(update={"state": state, "next_attempt_at": next_at}))

        self._cas(job_id, change)
        if state is not WebhookState.pending:
            self.d.pop(_hook_key(job_id), None)

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        self._load(job_id)
        out = []
        while (raw := self.d.get(_delivery(job_id, len(out) + 1))) is not None:
            out.append(DeliveryAttempt.model_validate_json(raw))
        return out


def _numbered(attempt: DeliveryAttempt, number: int) -> str:
    return attempt.model_copy(update={"attempt": number}).model_dump_json()


def _webhook_due(v: _Version, now: float) -> _Version:
    """A job that succeeded or failed: its webhook (if any) becomes pending, due now. In the same
    version as the end itself, so a crash cannot end a job and lose its callback."""
    hook = v.job.webhook
    if hook is None or hook.state is not None or v.job.status not in (JobStatus.succeeded, JobStatus.failed):
        return v
    return v.update(webhook=hook.model_copy(update={"state": WebhookState.pending, "next_attempt_at": _dt(now)}))
