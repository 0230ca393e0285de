"""The modal.Dict job store (functions/dict_job_store.py) passes the same store contract as SQLite, and
keeps its promises when concurrent writers race on one job.

modal.Dict is a Modal service that cannot run here (no account, no network): the store runs over
`MemoryDict` (tests/modal_doubles.py), an in-memory stand-in with exactly the methods the store uses (get, put with
skip_if_exists, pop, keys) and the semantics modal 1.6.4 gives them. What is tested is therefore the
store's protocol on top of those primitives, not Modal's implementation of them.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
import test_jobs_store

# The SQLite store's contract tests, run over the Dict store: the `store` and `reopen` fixtures below
# override the ones they were written with. (test_sqlite_* are about SQLite itself.)
from modal_doubles import MemoryDict
from test_jobs_store import LEASE_S, TRANSCRIPT, Clock, new_job

from functions.dict_job_store import DictJobStore
from shared.jobs.model import DeliveryAttempt, JobConflict, JobError, JobNotFound, JobStatus

CONTRACT = [n for n in dir(test_jobs_store) if n.startswith("test_") and not n.startswith("test_sqlite_")]
globals().update({name: getattr(test_jobs_store, name) for name in CONTRACT})


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def backing():
    return MemoryDict()


@pytest.fixture
def store(backing, clock):
    return DictJobStore(backing, clock=clock, lease_s=LEASE_S)


@pytest.fixture
def reopen(backing, clock):
    return lambda: DictJobStore(backing, clock=clock, lease_s=LEASE_S)


def test_every_contract_test_of_the_sqlite_store_runs_here_too():
    assert "test_a_run_that_lost_its_lease_is_refused_everything" in CONTRACT
    assert CONTRACT and all(globals()[name] is getattr(test_jobs_store, name) for name in CONTRACT)


# --- the stand-in ------------------------------------------------------------------------------------


def test_memory_dict_has_the_modal_dict_semantics_the_store_relies_on():
    import modal

    d = MemoryDict()
    for name in ("get", "put", "pop", "keys"):
        assert hasattr(modal.Dict, name)  # the real one has them, with these signatures:
    import inspect

    skip = inspect.signature(modal.Dict.put).parameters["skip_if_exists"]
    assert skip.kind is inspect.Parameter.KEYWORD_ONLY and skip.default is False
    assert d.put("k", {"a": 1}) is True
    assert d.put("k", {"a": 2}, skip_if_exists=True) is False and d.get("k") == {"a": 1}
    value = d.get("k")
    value["a"] = 3  # a changed object is not changed in the Dict
    assert d.get("k") == {"a": 1}
    assert d.get("missing") is None and d.get("missing", 5) == 5
    assert d.pop("k") == {"a": 1} and d.pop("k", None) is None
    with pytest.raises(KeyError):
        d.pop("k")


# --- races: what compare-and-set on the version number buys ------------------------------------------


def _hook_attempt(n: int, outcome: str, code: int) -> DeliveryAttempt:
    return DeliveryAttempt(
        attempt=n, at=datetime.now(timezone.utc), url="https://example.com/hook", status_code=code,
        duration_ms=1.0, outcome=outcome,
    )  # fmt: skip


def test_claimers_in_many_containers_never_claim_a_job_twice():
    d = MemoryDict(jitter_s=0.0005)  # interleave the calls of concurrent writers
    jobs = [DictJobStore(d).create(new_job(created=1_000_000.0 + i)) for i in range(12)]
    claimed, lock = [], threading.Lock()

    def container():
        store = DictJobStore(d)  # one store per container, sharing only the Dict
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=container) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.job_id for j in jobs)  # each once, none lost


@pytest.mark.parametrize("round_", range(8))
def test_a_cancel_racing_the_worker_is_never_lost_and_the_job_ends_once(round_):
    d = MemoryDict(jitter_s=0.0005)
    worker, web = DictJobStore(d), DictJobStore(d)
    job = worker.create(new_job())
    assert worker.claim(job.job_id) is not None
    outcomes: dict[str, object] = {}

    def work():
        for i in range(5):
            if not worker.update_progress(job.job_id, float(i), 28.0):
                outcomes["worker"] = "stopped"
                return
        outcomes["worker"] = "finished" if worker.finish(job.job_id, TRANSCRIPT) else "lost"

    def cancel():
        try:
            outcomes["cancel"] = web.cancel(job.job_id).status
        except JobConflict:
            outcomes["cancel"] = "conflict"

    threads = [threading.Thread(target=work), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = web.get(job.job_id)
    if outcomes["cancel"] == "conflict":  # the job had succeeded before the cancel
        assert outcomes["worker"] == "finished" and final.status is JobStatus.succeeded and final.result == TRANSCRIPT
    else:  # the cancel won: the worker noticed, and nothing overwrote the cancel
        assert outcomes["cancel"] is JobStatus.cancelled and outcomes["worker"] in ("stopped", "lost")
        assert final.status is JobStatus.cancelled and final.result is None


def test_finish_fail_and_cancel_racing_end_the_job_exactly_once():
    d = MemoryDict(jitter_s=0.0005)
    store = DictJobStore(d)
    job = store.create(new_job())
    store.claim(job.job_id)
    results = {}
    others = [DictJobStore(d) for _ in range(2)]

    def finish():
        results["finish"] = store.finish(job.job_id, TRANSCRIPT)

    def fail():
        results["fail"] = others[0].fail(job.job_id, JobError(code="boom", message="it broke"))

    def cancel():
        try:
            others[1].cancel(job.job_id)
            results["cancel"] = True
        except JobConflict:
            results["cancel"] = False

    threads = [threading.Thread(target=f) for f in (finish, fail, cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results.values()) == 1, results
    final = store.get(job.job_id).status
    winner = {"finish": JobStatus.succeeded, "fail": JobStatus.failed, "cancel": JobStatus.cancelled}
    assert final is next(winner[k] for k, won in results.items() if won)


def test_concurrent_deliverers_keep_every_attempt():
    d = MemoryDict(jitter_s=0.0005)
    store = DictJobStore(d)
    job = store.create(new_job(webhook=True))
    store.claim(job.job_id)
    store.finish(job.job_id, TRANSCRIPT)
    threads = [
        threading.Thread(target=DictJobStore(d).add_delivery, args=(job.job_id, _hook_attempt(1, "retry", 503), 2e9))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.attempt for a in store.deliveries(job.job_id)] == [1, 2, 3]  # both sent, both recorded


# --- the scans and their index repairs ---------------------------------------------------------------


def test_jobs_queued_for_long_are_listed_for_a_new_dispatch():
    d, clock = MemoryDict(), Clock()
    store = DictJobStore(d, clock=clock)
    old = store.create(new_job(created=clock.t - 900))
    store.create(new_job(created=clock.t - 10))
    running = store.create(new_job(created=clock.t - 950))
    store.claim(running.job_id)
    assert [j.job_id for j in store.queued_before(clock.t - 600)] == [old.job_id]


def test_a_creation_that_never_completed_leaves_no_job_and_is_tidied():
    d, clock = MemoryDict(), Clock()
    store = DictJobStore(d, clock=clock, orphan_after_s=600)
    job = new_job(created=clock.t)
    d.put(f"open:{clock.t:020.6f}:{job.job_id}", "")  # the container died right after the index entry
    with pytest.raises(JobNotFound):
        store.get(job.job_id)
    assert store.recover(3) == [] and len(d) == 1
    clock.t += 601
    assert store.recover(3) == [] and len(d) == 0


def test_an_end_whose_index_entries_were_lost_is_repaired_by_the_next_scan():
    d, clock = MemoryDict(), Clock()
    store = DictJobStore(d, clock=clock)
    job = store.create(new_job(webhook=True))
    store.claim(job.job_id)
    store._ended = lambda v: None  # the container dies between the end and its index entries
    store.finish(job.job_id, TRANSCRIPT)
    del store._ended
    assert store.due_webhooks(clock.t, 10) == []  # not indexed yet...
    assert store.recover(3) == []  # ...the sweep's scan of open jobs finds it ended and repairs that
    assert [j.job_id for j in store.due_webhooks(clock.t, 10)] == [job.job_id]
    store.add_delivery(job.job_id, _hook_attempt(1, "delivered", 200), None)
    clock.t += 10
    assert [j.job_id for j in store.delete_expired(clock.t)] == [job.job_id]
    assert len(d) == 0  # nothing of the job is left


def test_a_long_job_history_reads_in_a_few_calls():
    """The head hint keeps reads short however many versions a job has."""

    class Counting(MemoryDict):
        gets = 0

        def get(self, key, default=None):
            Counting.gets += 1
            return super().get(key, default)

    d = Counting()
    store = DictJobStore(d)
    job = store.create(new_job())
    store.claim(job.job_id)
    for i in range(50):
        store.update_progress(job.job_id, float(i), 28.0)
    Counting.gets = 0
    assert store.get(job.job_id).progress.done == 49.0
    assert Counting.gets == 3  # head, the version it names, and the missing next one
