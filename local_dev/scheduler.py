"""The pool's dispatch decisions, as pure functions: given what waits and what each worker holds,
which calls go to which worker now, merged how, and how long until a held batch is due.

Nothing here blocks, sleeps or mutates its inputs; local_dev/pool.py snapshots its queue and workers
under its lock, asks `plan`, and carries the assignments out.

- Dispatch: a call goes to the ready worker serving its stage with the fewest calls of that stage in
  flight, then the fewest in all, then the one picked least recently (round-robin on ties). A worker
  takes at most `inflight` calls per stage; a call whose worker died under it goes elsewhere first.
- Batching: TRANSCRIBE calls with equal merge keys (same options) are merged into one call of up to
  `batch_size` chunks. A full batch goes at once; a short one stays queued while its worker is busy
  (it can still grow), and waits up to `wait_s` for an idle one, unless several workers are idle: then
  the waiting chunks are shared out among them at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.pipeline.stages import Stage


@dataclass(frozen=True)
class Policy:
    batch_size: int  # most chunks in one (merged) TRANSCRIBE call
    wait_s: float = 0.0  # BATCH_WAIT_MS
    inflight: int = 2  # WORKER_INFLIGHT: calls per stage a worker holds
    merge: Literal["auto", "on", "off"] = "auto"  # BATCH_MERGE


@dataclass(frozen=True)
class Waiting:
    """A queued call."""

    key: int
    stage: Stage
    arrived: float
    merge_key: str | None = None  # TRANSCRIBE calls with equal keys may share one worker call
    size: int = 1  # chunks of a TRANSCRIBE batch
    attempts: int = 0
    avoid: int | None = None  # the worker that died under it
    cancelled: bool = False


@dataclass(frozen=True)
class Slot:
    """A worker: what it serves and the calls of each stage it holds."""

    worker_id: int
    stages: tuple[Stage, ...]
    ready: bool = True
    gpu: bool = False
    depths: Mapping[Stage, int] = field(default_factory=dict)
    last_pick: int = 0


@dataclass(frozen=True)
class Assignment:
    worker_id: int
    calls: tuple[int, ...]  # keys; more than one: a merged TRANSCRIBE call, the first one's options


@dataclass(frozen=True)
class Plan:
    assignments: tuple[Assignment, ...] = ()
    dropped: tuple[int, ...] = ()  # cancelled calls: out of the queue
    wake_in: float | None = None  # seconds until a held short batch is due; None: nothing held


def merges_on(policy: Policy, slot: Slot) -> bool:
    """BATCH_MERGE=auto merges on GPU workers only: on a CPU a batch of 8 short chunks took as much
    compute as 8 single ones and every merged request waited for the longest (local_dev bench)."""
    return policy.merge == "on" or (policy.merge == "auto" and slot.gpu)


class _Board:
    """Worker load as the plan fills them (the plan's own copy)."""

    def __init__(self, slots: Sequence[Slot]):
        self.slots = {s.worker_id: s for s in slots}
        self.depths = {s.worker_id: dict(s.depths) for s in slots}
        self.last_pick = {s.worker_id: s.last_pick for s in slots}
        self.picks = max(self.last_pick.values(), default=0)

    def depth(self, worker_id: int, stage: Stage | None = None) -> int:
        held = self.depths[worker_id]
        return sum(held.values()) if stage is None else held.get(stage, 0)

    def pick(self, stage: Stage, avoid: int | None, limit: int) -> Slot | None:
        ready = [s for s in self.slots.values()
                 if s.ready and stage in s.stages and self.depth(s.worker_id, stage) < limit]
        if avoid is not None and len(ready) > 1:
            ready = [s for s in ready if s.worker_id != avoid] or ready
        if not ready:
            return None
        return min(ready, key=lambda s: (self.depth(s.worker_id, stage), self.depth(s.worker_id),
                                         self.last_pick[s.worker_id]))

    def idle(self, stage: Stage) -> int:
        return sum(1 for s in self.slots.values() if s.ready and stage in s.stages and not self.depth(s.worker_id, stage))

    def assign(self, worker_id: int, stage: Stage) -> None:
        self.depths[worker_id][stage] = self.depth(worker_id, stage) + 1
        self.picks += 1
        self.last_pick[worker_id] = self.picks


def plan(queue: Sequence[Waiting], workers: Sequence[Slot], policy: Policy, now: float) -> Plan:
    """What to send now, in queue order (a retried call is at the front)."""
    board = _Board(workers)
    assignments: list[Assignment] = []
    dropped: list[int] = []
    taken: set[int] = set()
    wake: float | None = None
    shares: dict[str, int] = {}  # merge key -> chunks per idle worker, fixed for this pass
    for call in queue:
        if call.key in taken:
            continue
        if call.cancelled:
            taken.add(call.key)
            dropped.append(call.key)
            continue
        slot = board.pick(call.stage, call.avoid, policy.inflight)
        if slot is None:
            continue
        group = [call]
        if call.merge_key is not None and merges_on(policy, slot):
            mates = [c for c in queue if c.merge_key == call.merge_key and c.key not in taken
                     and c is not call and not c.cancelled]
            if call.merge_key not in shares:
                idle = board.idle(call.stage)
                waiting = call.size + sum(c.size for c in mates)
                shares[call.merge_key] = min(policy.batch_size, -(-waiting // idle)) if idle > 1 else 0
            share = shares[call.merge_key]
            cap = max(call.size, share) if share else policy.batch_size
            total = call.size
            for other in mates:
                if total + other.size <= cap:
                    group.append(other)
                    total += other.size
            if total < policy.batch_size and board.depth(slot.worker_id, call.stage):
                continue  # the worker is busy with a batch: this one can still grow meanwhile
            deadline = call.arrived + policy.wait_s
            if not share and total < policy.batch_size and now < deadline and call.attempts == 0:
                wake = deadline if wake is None else min(wake, deadline)
                continue  # hold a short batch a moment for calls from other requests
        taken.update(c.key for c in group)
        board.assign(slot.worker_id, call.stage)
        assignments.append(Assignment(slot.worker_id, tuple(c.key for c in group)))
    return Plan(tuple(assignments), tuple(dropped), None if wake is None else max(0.0, wake - now))


def unservable(queue: Sequence[Waiting], workers: Sequence[Slot]) -> list[int]:
    """Calls no worker left (`workers`: those not failed for good) serves."""
    return [c.key for c in queue if not any(c.stage in w.stages for w in workers)]


# --------------------------------------------------------------------------- merged calls


def merge_key(args: tuple, kwargs: dict) -> str:
    """Equal for TRANSCRIBE calls whose options (everything after the batch) are equal."""
    def one(value: Any) -> str:
        dump = getattr(value, "model_dump_json", None)
        return f"{type(value).__qualname__}:{dump()}" if dump else repr(value)

    return "|".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in sorted(kwargs.items())])


def merged_args(calls_args: Sequence[tuple]) -> tuple:
    """One TRANSCRIBE call's arguments for several: their batches end to end, the first one's options."""
    return ([chunk for args in calls_args for chunk in args[0]], *calls_args[0][1:])


def split_result(result: Any, sizes: Sequence[int]) -> list[list]:
    """A merged call's result list cut back into each call's part, in order."""
    if not isinstance(result, list) or len(result) != sum(sizes):
        got = f"{len(result)}" if isinstance(result, list) else "?"
        raise RuntimeError(f"merged transcribe returned {type(result).__name__} of {got}, expected {sum(sizes)}")
    parts, start = [], 0
    for size in sizes:
        parts.append(result[start:start + size])
        start += size
    return parts
