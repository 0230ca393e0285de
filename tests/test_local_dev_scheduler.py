"""The pool's dispatch decisions (local_dev/scheduler.py), pure: no processes, threads or sleeps.
The same decisions on real worker processes: test_local_dev_pool.py."""

from __future__ import annotations

import pytest

from local_dev.scheduler import Policy, Slot, Waiting, merge_key, merged_args, plan, split_result, unservable
from shared.core.domain import TranscribeOptions
from shared.pipeline.stages import ROLE_STAGES, Role, Stage

ALL = ROLE_STAGES[Role.ALL]
T = Stage.TRANSCRIBE
KEY = "opts"


def gpu(worker_id: int, *, depth: int = 0, stages=ALL, last_pick: int = 0, ready: bool = True) -> Slot:
    return Slot(worker_id, stages, ready, True, {T: depth} if depth else {}, last_pick)


def chunks(key: int, size: int, arrived: float = 0.0, **extra) -> Waiting:
    return Waiting(key, T, arrived, KEY, size, **extra)


def light(key: int, **extra) -> Waiting:
    return Waiting(key, Stage.VAD_SPLIT, 0.0, **extra)


def sent(p) -> list[tuple[int, tuple[int, ...]]]:
    return [(a.worker_id, a.calls) for a in p.assignments]


POLICY = Policy(batch_size=8, wait_s=0.02, inflight=2, merge="on")


def test_least_loaded_then_least_recently_picked():
    workers = [Slot(0, ALL, last_pick=5), Slot(1, ALL, last_pick=3)]
    assert sent(plan([light(1), light(2), light(3)], workers, POLICY, now=0)) == [(1, (1,)), (0, (2,)), (1, (3,))]
    busy = [Slot(0, ALL, depths={Stage.VAD_SPLIT: 1}), Slot(1, ALL, last_pick=9)]
    assert sent(plan([light(1)], busy, POLICY, now=0))[0][0] == 1


def test_a_worker_holds_at_most_inflight_calls_per_stage():
    p = plan([light(i) for i in range(5)], [Slot(0, ALL)], POLICY, now=0)
    assert sent(p) == [(0, (0,)), (0, (1,))]  # the other three stay queued here, where they can merge
    assert plan([light(1)], [Slot(0, ALL, ready=False)], POLICY, now=0).assignments == ()


def test_only_workers_serving_the_stage_and_a_retry_avoids_the_worker_that_died():
    workers = [Slot(0, ROLE_STAGES[Role.TRANSCRIBE]), Slot(1, ROLE_STAGES[Role.DIARIZE], last_pick=9)]
    assert sent(plan([Waiting(1, Stage.DIARIZE, 0.0)], workers, POLICY, now=0)) == [(1, (1,))]
    both = [Slot(0, ALL), Slot(1, ALL, last_pick=9)]
    assert sent(plan([light(1, avoid=0)], both, POLICY, now=0)) == [(1, (1,))]
    assert sent(plan([light(1, avoid=0)], both[:1], POLICY, now=0)) == [(0, (1,))]  # no other: the same one


def test_short_batches_merge_up_to_batch_size_in_queue_order():
    queue = [chunks(1, 2), chunks(2, 3), chunks(3, 1), chunks(4, 4)]
    p = plan(queue, [gpu(0)], POLICY, now=1.0)  # all waited past BATCH_WAIT_MS
    assert sent(p) == [(0, (1, 2, 3))]  # 6 chunks (6 + 4 > 8); the 4 wait for the busy worker, growing


def test_other_options_do_not_merge():
    other = Waiting(2, T, 0.0, "other options", 2)
    workers = [gpu(0), gpu(1, last_pick=1)]
    assert sent(plan([chunks(1, 2), other], workers, POLICY, now=1.0)) == [(0, (1,)), (1, (2,))]


def test_a_full_batch_goes_at_once_and_a_short_one_waits_for_company():
    assert sent(plan([chunks(1, 8, arrived=1.0)], [gpu(0)], POLICY, now=1.0)) == [(0, (1,))]
    held = plan([chunks(1, 3, arrived=1.0)], [gpu(0)], POLICY, now=1.005)
    assert held.assignments == () and held.wake_in == pytest.approx(0.015)
    assert sent(plan([chunks(1, 3, arrived=1.0)], [gpu(0)], POLICY, now=1.02)) == [(0, (1,))]


def test_a_retried_batch_does_not_wait():
    assert sent(plan([chunks(1, 3, arrived=1.0, attempts=1)], [gpu(0)], POLICY, now=1.0)) == [(0, (1,))]


def test_a_short_batch_stays_queued_while_its_worker_is_busy():
    p = plan([chunks(1, 1), chunks(2, 1)], [gpu(0, depth=1)], POLICY, now=5.0)
    assert p.assignments == () and p.wake_in is None  # it grows until the batch running now ends
    assert sent(plan([chunks(1, 8)], [gpu(0, depth=1)], POLICY, now=5.0)) == [(0, (1,))]  # a full one goes ahead


def test_idle_workers_share_the_waiting_chunks_at_once():
    queue = [chunks(i, 1, arrived=1.0) for i in range(8)]
    p = plan(queue, [gpu(0), gpu(1, last_pick=1)], POLICY, now=1.0)  # no wait: two workers idle
    assert sent(p) == [(0, (0, 1, 2, 3)), (1, (4, 5, 6, 7))]


def test_merging_is_for_gpu_workers_unless_on():
    cpu = Slot(0, ALL)
    queue = [chunks(1, 1, arrived=1.0), chunks(2, 1, arrived=1.0)]
    auto = Policy(batch_size=8, wait_s=0.3, inflight=2, merge="auto")
    assert sent(plan(queue, [cpu], auto, now=1.0)) == [(0, (1,)), (0, (2,))]  # neither merged nor held
    assert plan(queue, [gpu(0)], auto, now=1.0).assignments == ()  # a GPU worker holds them to merge
    off = Policy(batch_size=8, wait_s=0.3, inflight=2, merge="off")
    assert sent(plan(queue, [gpu(0)], off, now=1.0)) == [(0, (1,)), (0, (2,))]


def test_cancelled_calls_are_dropped_and_never_merged():
    queue = [light(1, cancelled=True), chunks(2, 2), chunks(3, 2, cancelled=True), chunks(4, 2)]
    p = plan(queue, [gpu(0)], POLICY, now=1.0)
    assert p.dropped == (1, 3) and sent(p) == [(0, (2, 4))]


def test_the_plan_changes_nothing_it_was_given():
    queue, workers = [chunks(1, 2), light(2)], [gpu(0, depth=1)]
    before = (list(queue), [w.depths.copy() for w in workers])
    plan(queue, workers, POLICY, now=1.0)
    assert (queue, [w.depths for w in workers]) == before


def test_calls_no_worker_left_can_run():
    alive = [Slot(0, ROLE_STAGES[Role.TRANSCRIBE])]
    assert unservable([light(1), Waiting(2, Stage.DIARIZE, 0.0)], alive) == [2]


def test_merge_keys_follow_the_options_and_results_split_back_in_order():
    en, de = TranscribeOptions(language="en"), TranscribeOptions(language="de")
    assert merge_key((), {"options": en}) == merge_key((), {"options": TranscribeOptions(language="en")})
    assert merge_key((), {"options": en}) != merge_key((), {"options": de})
    assert merged_args([(["a", "b"], en), (["c"], de)]) == (["a", "b", "c"], en)
    assert split_result([1, 2, 3, 4], [1, 3]) == [[1], [2, 3, 4]]
    with pytest.raises(RuntimeError, match="expected 4"):
        split_result([1, 2, 3], [1, 3])
