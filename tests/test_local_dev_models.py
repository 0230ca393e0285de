"""local_dev with the real models: two CPU worker processes, each holding a real StageWorker.

- concurrent requests spread across both workers, with transcripts identical to the in-process runner;
- SIGKILL of a worker in the middle of a request: the request still succeeds, identically, and the
  worker comes back;
- `python -m local_dev serve --workers 2` answers over HTTP and takes its workers down with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS
from scoring import assert_same_transcript
from local_dev.pool import LocalPool
from local_dev.settings import PoolSettings
from shared.media.decode import decode
from shared.core.config import Settings
from shared.core.domain import TranscribeOptions
from shared.pipeline.flow import transcribe
from shared.pipeline.runner import InProcessRunner
from shared.pipeline.models import StageWorker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
OPTIONS = TranscribeOptions(word_timestamps=True)


def S(**values) -> Settings:
    """Settings from these values and defaults only, whatever a developer's .env says."""
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return S(device="cpu", audio_storage_path=tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def clips() -> dict:
    return {"two": decode(TWO_SPEAKERS).samples, "one": decode(ONE_SPEAKER).samples}


@pytest.fixture(scope="module")
def reference(settings, clips) -> dict:
    with InProcessRunner(StageWorker(settings)) as runner:
        return {name: transcribe(samples, OPTIONS, runner, batch_size=settings.batch_size)
                for name, samples in clips.items()}


@pytest.fixture(scope="module")
def pool(settings):
    with LocalPool(settings, pool=PoolSettings(_env_file=None, cpu_workers=2)).start(timeout=300) as p:
        yield p


def test_concurrent_requests_spread_across_both_workers_and_match_in_process(pool, clips, reference):
    with ThreadPoolExecutor(2) as requests:
        futures = {name: requests.submit(transcribe, samples, OPTIONS, pool, batch_size=pool.settings.batch_size)
                   for name, samples in clips.items()}
        results = {name: f.result(timeout=300) for name, f in futures.items()}
    for name, result in results.items():
        assert_same_transcript(result, reference[name])
    assert len(reference["two"].speakers) == 2 and reference["two"].segments
    rows = pool.stats()["workers"]
    assert all(r["calls_done"] > 0 and r["busy_seconds"] > 0 for r in rows), rows


def test_sigkill_of_a_worker_mid_request_loses_nothing(pool, clips, reference):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(t=transcribe(clips["two"], OPTIONS, pool)))
    before = {r["worker"]: r["pid"] for r in pool.stats()["workers"]}
    done_before = sum(r["calls_done"] for r in pool.stats()["workers"])
    thread.start()
    # wait until the request is under way (VAD done) and a worker holds one of its calls, then kill it
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        rows = pool.stats()["workers"]
        if sum(r["calls_done"] for r in rows) > done_before:
            victim = next((r for r in rows if r["queue_depth"]), None)
        time.sleep(0.01)
    assert victim is not None, "the request finished before a worker could be killed"
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(300)
    assert_same_transcript(result["t"], reference["two"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = pool.stats()["workers"][victim["worker"]]
        if row["state"] == "ready":
            break
        time.sleep(0.2)
    assert row["state"] == "ready" and row["restarts"] == 1 and row["pid"] != before[victim["worker"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def test_serve_answers_over_http_on_worker_processes(tmp_path):
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "CPU_WORKERS": "2", "DEVICE": "cpu",
           "AUDIO_STORAGE_PATH": str(tmp_path), "LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "local_dev", "serve"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        workers = _children(server.pid)
        assert len(workers) >= 2
        with open(TWO_SPEAKERS, "rb") as f:
            up = httpx.post(f"{base}/api/audio", files={"file": ("two.flac", f, "audio/flac")}, timeout=60)
        assert up.status_code == 201, up.text
        clip_id = up.json()["clip_id"]
        answer = httpx.post(f"{base}/api/transcribe", params={"clip_id": clip_id}, timeout=300)
        assert answer.status_code == 200, answer.text
        transcript = answer.json()
        assert len(transcript["speakers"]) == 2 and "country" in " ".join(s["text"] for s in transcript["segments"])
        stats = httpx.get(f"{base}/api/workers", timeout=10).json()
        assert stats["runner"] == "local_dev" and len(stats["workers"]) >= 2
        assert sum(w["calls_done"] for w in stats["workers"]) > 0
        assert all(w["device"].startswith("cpu") for w in stats["workers"])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "worker processes outlived the server"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0].lower()
    except (OSError, IndexError):
        return "zombie"
