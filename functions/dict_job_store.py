"""The JobStore port on a modal.Dict: job state shared by every container of the deployment.

modal.Dict (modal 1.6.4) is a durable key-value service without transactions, and without any
compare-and-set across keys. What it offers, and all this store uses (see `KeyValue`): get, put,
put(..., skip_if_exists=True) (create-if-absent: it answers whether the key was created), pop, and keys(). Entries expire after 7 days without a read or a write
(so JOB_RESULT_TTL_S must stay well under that), values have no per-object size limit we come near.

How a state transition stays atomic without transactions: every job is a chain of immutable versions.

    job:<id>:v:1, job:<id>:v:2, ...   the job after each transition (JSON, the transcript left out)

A change reads the latest version n, applies a transition of shared/jobs/transitions.py (the same ones
the SQLite store applies), and writes version n+1 with skip_if_exists=True.
Exactly one writer creates n+1; a writer that loses reads again and decides again. That is
compare-and-set on the version number, so every transition is linearizable per job, as the SQLite
adapter's `BEGIN IMMEDIATE` transactions are:
- a job is claimed by one worker only (two claimers cannot both turn version n "queued" into "running");
- a job ends once: finish, fail, cancel and recovery race for the same version, one wins, the others
  see the ended job and report that they did not apply (a worker that lost to a cancel simply stops);
- progress from a worker whose run was taken over (its lease lapsed) is refused, so it stops too.
The lease itself (run number, `lease_until` and its holder) is part of the version: one key per change, one CAS.

Other keys of a job (all derived from, or named by, its versions):
    job:<id>:head               hint: the latest version number known. Readers start there and read
                                forward until a version is missing, so a stale hint costs a read, never
                                a wrong answer. It is written last at creation and popped first at
                                deletion, so it is also what makes a job exist.
    job:<id>:result:<run>       the transcript of run <run>, written before the version that says
                                "succeeded" names it (results stay out of the versions: one copy).
    job:<id>:delivery:<n>       webhook attempt n, created once (a concurrent attempt takes n+1).

Indexes for the scans (keys only; a scan lists keys, then reads the jobs it needs), always a
superset of what they index, and repaired by the scans:
    open:<created_at>:<id>      jobs not ended yet (written before the job, removed after it ends)
    ended:<finished_at>:<id>    ended jobs, for expiry
    hook:<id>                   jobs whose webhook is pending

What this does not give: a worker silent for longer than its lease (a stalled container) is taken for
dead, so its job may run twice; only one run can end it, and the other stops at its next progress
report. A webhook attempt may be sent twice if two deliverers run at once (receivers de-duplicate on
webhook-id, as Standard Webhooks asks). Keys left behind by a deletion interrupted half way, or by a
worker writing long after its job was deleted, are never read again and expire after 7 days.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from shared.core.domain import Transcript
from shared.jobs import transitions as T
from shared.jobs.model import DeliveryAttempt, Job, JobNotFound, JobStatus, WebhookState
from shared.jobs.store import JobStore, Step
from shared.jobs.transitions import Refusal, Stored

CAS_TRIES = 100
DICT_ENTRY_TTL_S = 7 * 86400  # modal.Dict drops an entry after 7 days without a read or a write


class KeyValue(Protocol):
    """The modal.Dict methods this store uses (tests/modal_doubles.py's MemoryDict has exactly these)."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool: ...

    def pop(self, key: Any, default: Any = ...) -> Any: ...

    def keys(self) -> Iterator[Any]: ...


# --- keys -------------------------------------------------------------------------------------------


def _head(job_id: str) -> str:
    return f"job:{job_id}:head"


def _version(job_id: str, n: int) -> str:
    return f"job:{job_id}:v:{n}"


def _result(job_id: str, run: int) -> str:
    return f"job:{job_id}:result:{run}"


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


@dataclass(frozen=True)
class _Version:
    """One version of a job: the stored job without its transcript, and which run's result it shows."""

    stored: Stored
    result_run: int | None = None

    def dumps(self) -> str:
        s = self.stored
        job = s.job.model_dump(mode="json", exclude={"result"}) | {"owner": s.job.owner}  # owner: exclude=True
        return json.dumps(
            {"job": job, "run": s.run, "lease_until": s.lease_until, "holder": s.holder, "result_run": self.result_run}
        )

    @classmethod
    def loads(cls, raw: str) -> _Version:
        data = json.loads(raw)
        job = Job.model_validate(data["job"])
        stored = Stored(job, data.get("run", 0), data.get("lease_until"), data.get("holder"))
        return cls(stored, data.get("result_run"))


class DictJobStore(JobStore):
    def __init__(
        self,
        d: KeyValue,
        *,
        clock: Callable[[], float] = time.time,
        lease_s: float = 120.0,
        orphan_after_s: float = 600.0,
        instance_id: str | None = None,
    ):
        """`d`: a modal.Dict. `lease_s`: how long a running job's worker is trusted without a sign of life.
        `orphan_after_s`: index entries of a creation that never completed are removed after this long."""
        super().__init__(clock=clock, lease_s=lease_s, instance_id=instance_id)
        self.d = d
        self.orphan_after_s = orphan_after_s

    # --- load, compare-and-set ---

    def _latest(self, job_id: str) -> tuple[int, _Version]:
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
        if v.result_run is not None:
            raw = self.d.get(_result(v.stored.job.job_id, v.result_run))
            result = Transcript.model_validate_json(raw) if raw is not None else None
        return v.stored.job.model_copy(update={"result": result})

    def _load(self, job_id: str) -> Stored:
        _, v = self._latest(job_id)
        return Stored(self._full(v), v.stored.run, v.stored.lease_until, v.stored.holder)

    def _change(self, job_id: str, step: Step) -> tuple[Stored, Refusal | None]:
        for attempt in range(CAS_TRIES):
            n, current = self._latest(job_id)
            new = step(current.stored)
            if isinstance(new, Refusal):
                return current.stored, new
            result_run = current.result_run
            if new.job.result is not None:  # it succeeded: the transcript first, before a version names it
                self.d.put(_result(job_id, new.run), new.job.result.model_dump_json())
                result_run = new.run
            if self.d.put(_version(job_id, n + 1), _Version(new, result_run).dumps(), skip_if_exists=True):
                self.d.put(_head(job_id), n + 1)
                return new, None
            time.sleep(random.uniform(0, 0.001 * (attempt + 1)))  # another writer won n+1: read again
        raise RuntimeError(f"job {job_id}: no transition after {CAS_TRIES} tries (contention)")

    def _insert(self, stored: Stored) -> None:
        job = stored.job
        self.d.put(_open_key(job), "")  # the index first: it never misses a job
        if not self.d.put(_version(job.job_id, 1), _Version(stored).dumps(), skip_if_exists=True):
            raise RuntimeError(f"job id {job.job_id} is taken")
        self.d.put(_head(job.job_id), 1)  # now the job exists

    # --- scans ---

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

    def _open(self) -> Iterator[Stored]:
        """Jobs not ended, oldest first; repairs the index on the way: a creation that never completed
        is dropped after orphan_after_s, an end whose index entries were lost gets them."""
        now = self.clock()
        for key, created, job_id in sorted(self._index("open:")):
            try:
                _, v = self._latest(job_id)
            except JobNotFound:
                if created is not None and created < now - self.orphan_after_s:
                    self.d.pop(key, None)  # no job was accepted
                continue
            if v.stored.job.finished:
                self._ended(v.stored)  # a crash came between the end and its index entries
                continue
            yield v.stored

    def _queued_ids(self) -> Iterator[str]:
        return (s.job.job_id for s in self._open() if s.job.status is JobStatus.queued)

    def _running_ids(self) -> Iterator[str]:
        return (s.job.job_id for s in self._open() if s.job.status is JobStatus.running)

    def queued_before(self, created_before: float) -> list[Job]:
        """Jobs still queued that were created before the given time (oldest first)."""
        return [
            s.job for s in self._open() if s.job.status is JobStatus.queued and s.job.created_at.timestamp() < created_before
        ]

    def _ended(self, stored: Stored) -> None:
        """Index entries of an ended job (idempotent): ended, webhook pending, no longer open."""
        job = stored.job
        self.d.put(_ended_key(job), "")
        if job.webhook and job.webhook.state is WebhookState.pending:
            self.d.put(_hook_key(job.job_id), "")
        self.d.pop(_open_key(job), None)

    def delete_expired(self, finished_before: float) -> list[Job]:
        deleted = []
        for key, finished, job_id in sorted(self._index("ended:")):
            if finished is None or finished >= finished_before:
                continue
            try:
                n, v = self._latest(job_id)
            except JobNotFound:  # a deletion interrupted after the head went: its leftovers expire
                self.d.pop(key, None)
                continue
            job = v.stored.job  # without its transcript: the caller needs the clip, not the text
            if not job.finished or job.finished_at.timestamp() >= finished_before:
                continue
            if job.webhook and job.webhook.state is WebhookState.pending:
                continue
            self._purge(job_id, n, v)
            self.d.pop(key, None)
            deleted.append(job)
        return deleted

    def _purge(self, job_id: str, n: int, v: _Version) -> None:
        self.d.pop(_head(job_id), None)  # first: the job is gone for readers
        for run in range(1, v.stored.run + 1):
            self.d.pop(_result(job_id, run), None)
        i = 1
        while self.d.pop(_delivery(job_id, i), None) is not None:
            i += 1
        for i in range(1, n + 1):
            self.d.pop(_version(job_id, i), None)
        self.d.pop(_hook_key(job_id), None)
        self.d.pop(_open_key(v.stored.job), None)

    # --- webhooks ---

    def due_webhooks(self, now: float, limit: int) -> list[Job]:
        due = []
        for key, _, job_id in self._index("hook:"):
            try:
                _, v = self._latest(job_id)
            except JobNotFound:
                self.d.pop(key, None)
                continue
            hook = v.stored.job.webhook
            if not hook or hook.state is not WebhookState.pending:
                self.d.pop(key, None)  # delivered or failed since: repair the index
                continue
            if hook.next_attempt_at is not None and hook.next_attempt_at.timestamp() <= now:
                due.append(v)
        due.sort(key=lambda v: v.stored.job.webhook.next_attempt_at)
        return [self._full(v) for v in due[:limit]]

    def add_delivery(self, job_id: str, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        self._latest(job_id)  # JobNotFound before anything is written
        number = attempt.attempt
        while not self.d.put(_delivery(job_id, number), _numbered(attempt, number), skip_if_exists=True):
            number += 1  # a concurrent deliverer recorded this number: keep both attempts
        stored, _ = self._change(job_id, lambda s: T.delivered(s, outcome=attempt.outcome, retry_at=retry_at))
        if not (stored.job.webhook and stored.job.webhook.state is WebhookState.pending):
            self.d.pop(_hook_key(job_id), None)

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        self._latest(job_id)
        out = []
        while (raw := self.d.get(_delivery(job_id, len(out) + 1))) is not None:
            out.append(DeliveryAttempt.model_validate_json(raw))
        return out


def _numbered(attempt: DeliveryAttempt, number: int) -> str:
    return attempt.model_copy(update={"attempt": number}).model_dump_json()
