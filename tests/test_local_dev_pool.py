"""local_dev's worker pool on real worker processes (spawned, TCP-connected), running a cheap stand-in
for the models so the dispatch, batching, crash and restart logic is tested in seconds. The dispatch
and batching decisions themselves, without processes or timing: test_local_dev_scheduler.py.

The stand-in (`FakeWorker`) is loaded inside each worker process through the pool's worker_factory
hook, exactly where the real `shared.pipeline.models.StageWorker` goes. Real models: test_local_dev_models.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import AuthenticationError, Client

import numpy as np
import pytest

from local_dev.gpus import Device, WorkerSpec
from local_dev.pool import LocalPool, PoolClosed, WorkerCrashed
from local_dev.settings import PoolSettings
from shared.core.config import Settings
from shared.core.domain import Chunk, ChunkTranscript, TranscribedSegment, TranscribeOptions
from shared.media.pcm import ChunkAudio
from shared.pipeline.stages import ROLE_STAGES, Role, Stage

FACTORY = f"{__name__}:FakeWorker"
KILL_ME = -99.0  # VAD_SPLIT input that makes the worker process exit on the spot


def S(**values) -> Settings:
    """Settings from these values and defaults only, whatever a developer's .env says."""
    return Settings(_env_file=None, **values)


def P(**values) -> PoolSettings:
    return PoolSettings(_env_file=None, **values)


def split(values: dict) -> tuple[dict, dict]:
    """(core settings, pool settings) of a mix of both."""
    pool = {k: v for k, v in values.items() if k in PoolSettings.model_fields}
    return {k: v for k, v in values.items() if k not in pool}, pool


class FakeWorker:
    """Stands in for StageWorker inside a worker process.

    VAD_SPLIT(samples): sleeps samples[0] seconds and returns the worker's pid; negative raises
    ValueError, KILL_ME exits the process. TRANSCRIBE(batch, options): 0.05 s per chunk, one
    ChunkTranscript per chunk whose text is "index|batch length|pid"; a chunk with index < 0 raises.
    """

    def __init__(self, settings: Settings):
        if os.environ.get("FAKE_WORKER_BROKEN") == "1":
            raise RuntimeError("model file is corrupt")
        self.settings = settings

    def load(self, stages):
        return self

    def run(self, stage, *args, **kwargs):
        stage = Stage(stage)
        if stage is Stage.TRANSCRIBE:
            batch, options = args[0], kwargs["options"]
            assert isinstance(options, TranscribeOptions)
            if any(item.chunk.index < 0 for item in batch):
                raise ValueError("chunk index < 0")
            time.sleep(0.05 * len(batch))
            return [
                ChunkTranscript(chunk=item.chunk, language=options.language or "en", segments=[
                    TranscribedSegment(start=item.chunk.start, end=item.chunk.end,
                                       text=f"{item.chunk.index}|{len(batch)}|{os.getpid()}")])
                for item in batch
            ]
        if stage is Stage.DETECT_LANGUAGE:
            if kwargs.get("unpicklable"):
                return lambda: None
            return {"pid": os.getpid(), "env": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "device": self.settings.device, "cpu_threads": self.settings.cpu_threads}
        seconds = float(args[0][0])
        if seconds == KILL_ME:
            os._exit(3)
        if seconds < 0:
            raise ValueError("negative input")
        time.sleep(seconds)
        return os.getpid()


def sleep(pool: LocalPool, seconds: float):
    return pool.submit(Stage.VAD_SPLIT, np.array([seconds]))


def batch(*indices: int) -> list[ChunkAudio]:
    return [ChunkAudio(Chunk(index=i, start=i, end=i + 1, keep_start=i, keep_end=i + 1), np.zeros(16)) for i in indices]


def make_pool(workers: int = 2, **settings) -> LocalPool:
    core, pool = split({"device": "cpu", "cpu_workers": workers, "batch_wait_ms": 0, "batch_merge": "on", **settings})
    return LocalPool(S(**core), pool=P(**pool), worker_factory=FACTORY).start(timeout=60)


def wait_for(predicate, timeout: float = 20.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def pool():
    with make_pool() as p:
        yield p


@pytest.fixture(scope="module")
def solo_pool():
    with make_pool(workers=1) as p:
        yield p


@pytest.fixture
def solo(solo_pool):
    """The one-worker pool, with settings a test may change (`tune`)."""
    settings, pool_settings = solo_pool.settings, solo_pool.pool_settings
    yield solo_pool
    solo_pool.settings, solo_pool.pool_settings = settings, pool_settings


def tune(pool: LocalPool, **settings) -> tuple[int, int]:
    """Change the pool's batching settings; return (merged calls, calls done) so far."""
    core, pool_settings = split(settings)
    pool.settings = pool.settings.model_copy(update=core)
    pool.pool_settings = pool.pool_settings.model_copy(update=pool_settings)
    stats = pool.stats()
    return stats["merged_calls"], sum(w["calls_done"] for w in stats["workers"])


def pids(pool: LocalPool) -> list[int]:
    return [w["pid"] for w in pool.stats()["workers"]]


# --------------------------------------------------------------------------- dispatch


def test_concurrent_calls_spread_across_both_workers(pool):
    futures = [sleep(pool, 0.3) for _ in range(4)]
    used = [f.result(timeout=10) for f in futures]
    assert sorted(set(used)) == sorted(pids(pool))
    assert used.count(used[0]) == 2




def test_least_loaded_worker_gets_the_work(pool):
    busy = sleep(pool, 1.5)
    busy_pid = wait_for(lambda: next((w["pid"] for w in pool.stats()["workers"] if w["queue_depth"]), None))
    quick = [sleep(pool, 0).result(timeout=10) for _ in range(5)]
    assert busy_pid not in quick
    assert busy.result(timeout=10) == busy_pid


def test_map_yields_in_input_order(pool):
    results = list(pool.map(Stage.TRANSCRIBE, [batch(i) for i in range(6)], options=TranscribeOptions()))
    assert [r[0].chunk.index for r in results] == list(range(6))


def test_stage_error_reaches_the_caller_and_the_worker_lives_on(pool):
    before = pids(pool)
    with pytest.raises(ValueError, match="negative input") as info:
        sleep(pool, -1).result(timeout=10)
    assert any("in worker" in note for note in getattr(info.value, "__notes__", []))
    assert pids(pool) == before
    assert sleep(pool, 0).result(timeout=10) in before


def test_a_result_that_cannot_travel_is_an_error_not_a_hang(pool):
    with pytest.raises(RuntimeError, match="unpicklable reply"):
        pool.submit(Stage.DETECT_LANGUAGE, np.zeros(4), unpicklable=True).result(timeout=10)
    assert sleep(pool, 0).result(timeout=10)


def test_cancelled_call_never_runs(solo):
    _, done = tune(solo)
    blocker = [sleep(solo, 0.5) for _ in range(2)]  # fills the worker (WORKER_INFLIGHT=2)
    victim = sleep(solo, 0)
    assert victim.cancel()
    assert all(f.result(timeout=10) for f in blocker)
    assert sleep(solo, 0).result(timeout=10)
    assert solo.stats()["workers"][0]["calls_done"] == done + 3


def test_stats_show_device_depth_busy_time_and_restarts(pool):
    f = sleep(pool, 0.5)
    busy = wait_for(lambda: [w for w in pool.stats()["workers"] if w["queue_depth"] == 1])
    assert busy[0]["device"] == "cpu" and busy[0]["state"] == "ready"
    f.result(timeout=10)
    stats = pool.stats()
    assert stats["pending"] == 0 and stats["launcher"] == "process"
    for row in stats["workers"]:
        assert {"device", "queue_depth", "busy_seconds", "restarts", "pid", "stages"} <= set(row)
    assert sum(w["busy_seconds"] for w in stats["workers"]) >= 0.5


def test_workers_are_pinned_through_their_environment():
    """The pin is in the child's environment from its first instruction (spawn, not fork)."""
    settings = S(device="cpu")
    spec = WorkerSpec(0, Device("cpu", 0), ROLE_STAGES[Role.ALL], {"CUDA_VISIBLE_DEVICES": "GPU-fake-uuid"}, cpu_threads=1)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with LocalPool(settings, [spec], pool=P(batch_wait_ms=0), worker_factory=FACTORY).start(timeout=60) as p:
        seen = p.submit(Stage.DETECT_LANGUAGE, np.zeros(4)).result(timeout=10)
        assert p.stats()["workers"][0]["pid"] == seen["pid"] != os.getpid()
    assert seen["env"] == "GPU-fake-uuid" and seen["device"] == "cpu" and seen["cpu_threads"] == 1
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before


def test_strangers_without_the_key_are_turned_away(pool):
    with pytest.raises((AuthenticationError, EOFError, ConnectionError)):
        Client(pool.address, authkey=b"wrong key").send(("hello", 0, {}))
    assert sleep(pool, 0).result(timeout=10)


# --------------------------------------------------------------------------- crashes


def test_sigkill_mid_call_retries_on_the_other_worker_and_restarts():
    with make_pool() as p:
        before = {w["worker"]: w["pid"] for w in p.stats()["workers"]}
        call = sleep(p, 1.0)
        victim = wait_for(lambda: next((w for w in p.stats()["workers"] if w["queue_depth"]), None))
        os.kill(victim["pid"], signal.SIGKILL)
        survivor = next(pid for wid, pid in before.items() if wid != victim["worker"])
        assert call.result(timeout=20) == survivor  # the request succeeded, on the other worker
        back = wait_for(lambda: next((w for w in p.stats()["workers"]
                                      if w["worker"] == victim["worker"] and w["state"] == "ready"), None))
        assert back["restarts"] == 1 and back["pid"] not in before.values()
        # the restarted worker takes work again
        assert set(f.result(timeout=10) for f in [sleep(p, 0.3) for _ in range(4)]) == {back["pid"], survivor}


def test_sigkill_of_the_only_worker_waits_for_its_restart():
    with make_pool(workers=1) as p:
        call = sleep(p, 1.0)
        victim = wait_for(lambda: next((w for w in p.stats()["workers"] if w["queue_depth"]), None))
        os.kill(victim["pid"], signal.SIGKILL)
        assert call.result(timeout=30) != victim["pid"]
        assert p.stats()["workers"][0]["restarts"] == 1


def test_call_that_kills_every_worker_fails_after_max_attempts():
    with make_pool(worker_max_attempts=2) as p:
        with pytest.raises(WorkerCrashed, match="2 workers died"):
            sleep(p, KILL_ME).result(timeout=30)
        wait_for(lambda: all(w["state"] == "ready" for w in p.stats()["workers"]))
        assert sum(w["restarts"] for w in p.stats()["workers"]) == 2
        assert sleep(p, 0).result(timeout=10)


def test_worker_that_cannot_load_fails_the_start(monkeypatch):
    monkeypatch.setenv("FAKE_WORKER_BROKEN", "1")
    pool = LocalPool(S(device="cpu"), pool=P(cpu_workers=1, worker_max_attempts=2), worker_factory=FACTORY)
    try:
        with pytest.raises(RuntimeError, match="model file is corrupt"):
            pool.start(timeout=60)
    finally:
        pool.close()


def test_close_fails_what_is_still_pending():
    p = make_pool(workers=1)
    calls = [sleep(p, 0.5) for _ in range(4)]
    time.sleep(0.1)
    p.close()
    for f in calls:
        with pytest.raises(PoolClosed):
            f.result(timeout=10)
    with pytest.raises(PoolClosed):
        sleep(p, 0)


# --------------------------------------------------------------------------- cross-request batching


def size_of_call(transcript: ChunkTranscript) -> int:
    """How many chunks the worker call that produced this transcript had (FakeWorker's text)."""
    return int(transcript.segments[0].text.split("|")[1])


def test_short_batches_from_concurrent_requests_share_one_call(solo):
    merged, done = tune(solo, batch_size=8, batch_wait_ms=300)
    options = TranscribeOptions(language="en")
    parts = [solo.submit(Stage.TRANSCRIBE, batch(*ids), options=options) for ids in ([0, 1], [2, 3, 4], [5])]
    results = [f.result(timeout=10) for f in parts]
    assert [[t.chunk.index for t in r] for r in results] == [[0, 1], [2, 3, 4], [5]]
    assert {size_of_call(t) for r in results for t in r} == {6}  # one call of 6 chunks
    assert tune(solo) == (merged + 1, done + 1)












def test_merging_is_for_gpu_workers_unless_asked(solo):
    """BATCH_MERGE=auto merges on GPU workers only (measured: on a CPU it saves nothing)."""
    def sizes() -> set[int]:
        parts = [solo.submit(Stage.TRANSCRIBE, batch(i), options=TranscribeOptions()) for i in range(3)]
        return {size_of_call(f.result(timeout=10)[0]) for f in parts}

    tune(solo, batch_size=8, batch_wait_ms=300, batch_merge="auto")
    assert sizes() == {1}  # a CPU worker
    tune(solo, batch_merge="off")
    assert sizes() == {1}
    gpu = WorkerSpec(0, Device("cuda", 0, "fake"), ROLE_STAGES[Role.ALL], {"CUDA_VISIBLE_DEVICES": ""})
    with LocalPool(S(device="cpu"), [gpu], pool=P(batch_wait_ms=300, batch_merge="auto"), worker_factory=FACTORY).start(timeout=60) as p:
        parts = [p.submit(Stage.TRANSCRIBE, batch(i), options=TranscribeOptions()) for i in range(3)]
        assert {size_of_call(f.result(timeout=10)[0]) for f in parts} == {3}




def test_a_failing_part_of_a_merged_call_fails_alone(solo):
    tune(solo, batch_size=8, batch_wait_ms=300)
    good = solo.submit(Stage.TRANSCRIBE, batch(0, 1), options=TranscribeOptions())
    bad = solo.submit(Stage.TRANSCRIBE, batch(-1), options=TranscribeOptions())
    other = solo.submit(Stage.TRANSCRIBE, batch(2), options=TranscribeOptions())
    assert [t.chunk.index for t in good.result(timeout=10)] == [0, 1]
    assert [t.chunk.index for t in other.result(timeout=10)] == [2]
    with pytest.raises(ValueError, match="index < 0"):
        bad.result(timeout=10)


def test_merged_call_survives_a_worker_kill():
    with make_pool(workers=2, batch_size=8, batch_wait_ms=300) as p:
        options = TranscribeOptions()
        # 8 x 0.05 s per call; submit from threads, as concurrent requests do
        results: dict[int, list] = {}

        def request(i: int) -> None:
            results[i] = p.submit(Stage.TRANSCRIBE, batch(*range(10 * i, 10 * i + 4)), options=options).result(30)

        threads = [threading.Thread(target=request, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        victim = wait_for(lambda: next((w for w in p.stats()["workers"] if w["queue_depth"]), None), step=0.005)
        os.kill(victim["pid"], signal.SIGKILL)
        for t in threads:
            t.join(30)
        assert [[c.chunk.index for c in results[i]] for i in range(2)] == [[0, 1, 2, 3], [10, 11, 12, 13]]
