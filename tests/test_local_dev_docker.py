"""The Docker launcher (local_dev/docker_launcher.py): the commands it issues, the compose file, and a full
run through a stand-in `docker` executable that starts the container's command as a local process (no
engine here).

On a GPU box the real check is the steps under "Docker containers" in docs/deployment.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from local_dev.docker_launcher import (
    DOCKERFILE,
    DockerLauncher,
    build_command,
    compose_config,
    render_compose,
    run_command,
)
from local_dev.gpus import Device, WorkerSpec, plan_workers
from local_dev.pool import LocalPool
from local_dev.settings import PoolSettings
from shared.core.config import Settings
from shared.pipeline.stages import ROLE_STAGES, Role, Stage

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def S(**values) -> Settings:
    """Settings from these values and defaults only, whatever a developer's .env says."""
    return Settings(_env_file=None, **values)


def gpu(index: int) -> Device:
    return Device("cuda", index, "NVIDIA GeForce RTX 3060", f"GPU-{index:08d}-aaaa", 12288)


def test_build_uses_the_worker_dockerfile_from_images():
    assert build_command(S(), "ws:1") == ["docker", "build", "-f", DOCKERFILE, "-t", "ws:1", "."]
    assert (REPO / DOCKERFILE).is_file()
    with_pyannote = build_command(S(diarizer="pyannote"), "ws:1")
    assert with_pyannote[-3:] == ["--build-arg", "WITH_PYANNOTE=1", "."]


def test_the_image_carries_what_the_worker_command_needs():
    dockerfile = (REPO / DOCKERFILE).read_text()
    assert "COPY local_dev/ local_dev/" in dockerfile and "PYTHONPATH=/app" in dockerfile
    assert "HF_HOME=/cache/huggingface" in dockerfile  # where run_command mounts the model cache


def test_run_command_for_a_gpu_worker():
    settings = S(hf_home="/srv/hf")
    spec = plan_workers(settings, [gpu(0), gpu(1)], pool=PoolSettings(_env_file=None))[1]
    cmd = run_command(spec, ("127.0.0.1", 40123), settings, "ws:1")
    image = cmd.index("ws:1")
    opts, inner = cmd[:image], cmd[image + 1:]
    assert opts[:3] == ["docker", "run", "--rm"] and "--init" in opts
    assert opts[opts.index("--gpus") + 1] == "device=GPU-00000001-aaaa"
    assert opts[opts.index("--network") + 1] == "host"
    assert opts[opts.index("--name") + 1] == "whospoke-worker-1"
    envs = [opts[i + 1] for i, a in enumerate(opts) if a == "-e"]
    assert "WORKER_AUTHKEY" in envs  # the secret comes from the environment, not the command line
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES") for e in envs)  # --gpus does the pinning
    assert "HF_HOME=/cache/huggingface" in envs and "/srv/hf:/cache/huggingface" in opts
    assert inner == ["python", "-m", "local_dev", "worker", "--connect", "127.0.0.1:40123", "--id", "1",
                     "--role", "diarize", "--gpu-index", "1"]


def test_run_command_for_a_cpu_worker_has_no_gpu_flag():
    settings = S()
    spec = plan_workers(settings, [], pool=PoolSettings(_env_file=None), workers=2)[0]
    cmd = run_command(spec, ("127.0.0.1", 1), settings, "ws:1")
    assert "--gpus" not in cmd and "--gpu-index" not in cmd and cmd[-2:] == ["--role", "all"]
    assert any(a.startswith("OMP_NUM_THREADS=") for a in cmd)


def test_workers_see_the_clip_store_at_the_same_path(tmp_path):
    """Stages get audio by reference (the PCM file's path): a container must find it where the API wrote it."""
    settings = S(audio_storage_path=tmp_path / "store")
    cmd = run_command(plan_workers(settings, [], pool=PoolSettings(_env_file=None), workers=1)[0], ("127.0.0.1", 1), settings, "ws:1")
    store = (tmp_path / "store").resolve()
    assert f"{store}:{store}:ro" in cmd
    compose = compose_config(2, "ws:1")
    assert all("audio-data:/data:ro" in svc["volumes"] for name, svc in compose["services"].items() if name != "api")
    assert compose["services"]["api"]["environment"]["AUDIO_STORAGE_PATH"] == "/data"


def test_local_model_folders_are_mounted_and_the_worker_told_where(tmp_path):
    model = tmp_path / "large-v3-ct2"
    model.mkdir()
    ckpt = tmp_path / "pyannote" / "config.yaml"
    ckpt.parent.mkdir()
    ckpt.write_text("pipeline: {}\n")
    settings = S(whisper_model=str(model), pyannote_model=str(ckpt))
    spec = WorkerSpec(0, gpu(0), ROLE_STAGES[Role.ALL])
    cmd = run_command(spec, ("127.0.0.1", 1), settings)
    assert f"{model}:/models/whisper:ro" in cmd and f"{ckpt.parent}:/models/pyannote:ro" in cmd
    inside = DockerLauncher(settings, build=False).worker_settings(settings)
    assert inside.whisper_model == "/models/whisper"
    assert inside.pyannote_model == "/models/pyannote/config.yaml"
    assert str(inside.hf_home) == "/cache/huggingface"


def test_committed_compose_file_is_the_generated_one():
    committed = (REPO / "local_dev" / "docker-compose.yml").read_text()
    assert committed == render_compose(2), "run: python -m local_dev compose --gpus 2 > local_dev/docker-compose.yml"


def test_compose_one_worker_per_gpu_diarizer_on_the_second():
    config = yaml.safe_load(render_compose(2))
    services = config["services"]
    assert set(services) == {"api", "worker-gpu0", "worker-gpu1"}
    api = services["api"]
    assert api["command"][3:] == ["serve", "--external-workers", "2", "--listen", "0.0.0.0"]
    assert api["build"] == {"context": "..", "dockerfile": "images/Dockerfile.worker",
                            "args": {"WITH_PYANNOTE": "${WITH_PYANNOTE:-0}"}}
    for i, role in enumerate(["transcribe", "diarize"]):
        worker = services[f"worker-gpu{i}"]
        assert worker["command"][3:] == ["worker", "--connect", "api:7100", "--id", str(i), "--role", role,
                                         "--gpu-index", str(i)]
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "device_ids": [str(i)], "capabilities": ["gpu"]}
        assert worker["restart"] == "unless-stopped"
        assert worker["environment"]["WORKER_AUTHKEY"] == api["environment"]["WORKER_AUTHKEY"]
        assert worker["environment"]["WORKER_AUTHKEY"].startswith("${WORKER_AUTHKEY:?")
    assert compose_config(1)["services"]["worker-gpu0"]["command"][-3] == "all"


def test_the_compose_api_may_listen_on_all_interfaces_of_its_container():
    """HOST=0.0.0.0 inside the container, published on the host's 127.0.0.1 only: ALLOW_OPEN_BIND says so,
    and the server's bind check accepts it without API keys (it refuses 0.0.0.0 without either)."""
    from shared.api.auth import ConfigurationError
    from shared.api.serving import check_bind
    from shared.core.config import Settings

    api = compose_config(2)["services"]["api"]
    assert api["ports"] == ["127.0.0.1:8000:8000"] and api["environment"]["ALLOW_OPEN_BIND"] == "true"
    settings = Settings(_env_file=None, host=api["environment"]["HOST"], allow_open_bind=True)
    check_bind(settings)
    with pytest.raises(ConfigurationError, match="ALLOW_OPEN_BIND"):
        check_bind(settings.model_copy(update={"allow_open_bind": False}))


# --------------------------------------------------------------------------- through a stand-in docker

FAKE_DOCKER = textwrap.dedent(
    """\
    #!{python}
    # Stand-in for the docker CLI: logs its arguments; `run` starts the container's command here, with
    # only the environment `docker run` would give it (-e KEY=VALUE, or -e KEY from this environment).
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if args[0] != "run":
        sys.exit(0)
    env = {{k: os.environ[k] for k in ("PATH", "PYTHONPATH", "FAKE_DOCKER_LOG") if k in os.environ}}
    i = 1
    while args[i].startswith("-"):
        if args[i] in ("--name", "--network", "--gpus", "-e", "-v"):
            if args[i] == "-e":
                key, eq, value = args[i + 1].partition("=")
                env[key] = value if eq else os.environ[key]
            i += 2
        else:
            i += 1
    command = args[i + 1:]
    command[0] = sys.executable if command[0] == "python" else command[0]
    os.execvpe(command[0], command, env)
    """
)


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))
    monkeypatch.chdir(REPO)
    return script, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_docker_launcher_serves_restarts_and_rebuilds_nothing(fake_docker):
    script, log = fake_docker
    settings = S(device="cpu")
    specs = [WorkerSpec(i, Device("cpu", i), ROLE_STAGES[Role.ALL] if i == 0 else ROLE_STAGES[Role.TRANSCRIBE]) for i in range(2)]
    launcher = DockerLauncher(settings, image="ws:test", docker=str(script))
    with LocalPool(settings, specs, pool=PoolSettings(_env_file=None, batch_wait_ms=0), launcher=launcher,
                   worker_factory="test_local_dev_pool:FakeWorker") as pool:
        pool.start(timeout=60)
        assert calls(log)[0] == build_command(settings, "ws:test")[1:]  # built once, from images/Dockerfile.worker
        runs = [c for c in calls(log) if c[0] == "run"]
        assert len(runs) == 2 and all("--network" in c for c in runs)
        rows = pool.stats()["workers"]
        assert pool.stats()["launcher"] == "docker" and rows[0]["process"] == "container whospoke-worker-0"
        used = {pool.submit(Stage.VAD_SPLIT, np.array([0.2])).result(timeout=10) for _ in range(2)}
        assert used <= {r["pid"] for r in rows}

        # a container dies mid-call: the call is retried, the container started again
        call = pool.submit(Stage.VAD_SPLIT, np.array([1.0]))
        deadline = time.monotonic() + 10
        while not any(r["queue_depth"] for r in pool.stats()["workers"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = next(r for r in pool.stats()["workers"] if r["queue_depth"])
        os.kill(victim["pid"], signal.SIGKILL)
        assert call.result(timeout=30) != victim["pid"]
        deadline = time.monotonic() + 30
        while pool.stats()["workers"][victim["worker"]]["state"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.stats()["workers"][victim["worker"]]["restarts"] == 1
    log_calls = calls(log)
    assert sum(c[0] == "build" for c in log_calls) == 1
    name = f"whospoke-worker-{victim['worker']}"
    assert ["rm", "-f", name] in log_calls
    assert sum(c[0] == "run" and name in c for c in log_calls) == 2


def test_worker_command_refuses_to_start_without_the_key(monkeypatch, capsys):
    from local_dev.__main__ import main

    monkeypatch.delenv("WORKER_AUTHKEY", raising=False)
    assert main(["worker", "--connect", "127.0.0.1:1", "--id", "0"]) == 2
    assert "WORKER_AUTHKEY" in capsys.readouterr().err


def test_external_workers_as_compose_runs_them(monkeypatch):
    """`serve --external-workers 2` + two `python -m local_dev worker` commands, as docker compose runs
    them: roles from the command line, and a worker that dies is taken back when it reconnects."""
    from shared.core.domain import TranscribeOptions
    from test_local_dev_pool import batch

    monkeypatch.setenv("WORKER_AUTHKEY", "compose-secret")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))
    pool_settings = PoolSettings(_env_file=None, worker_authkey="compose-secret", batch_wait_ms=0)
    pool = LocalPool(S(device="cpu"), pool=pool_settings, external=2, worker_factory="test_local_dev_pool:FakeWorker")

    def worker(i: int, role: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "local_dev", "worker", "--connect",
                                 f"127.0.0.1:{pool.address[1]}", "--id", str(i), "--role", role], cwd=REPO)

    procs = [worker(0, "transcribe"), worker(1, "diarize")]
    try:
        pool.start(timeout=60)
        rows = pool.stats()["workers"]
        assert pool.stats()["launcher"] == "external"
        roles = [Role.TRANSCRIBE, Role.DIARIZE]  # from the command lines
        assert [r["stages"] for r in rows] == [[s.value for s in ROLE_STAGES[role]] for role in roles]
        diarized_by = pool.submit(Stage.DIARIZE, np.array([0.0]), None).result(timeout=10)
        assert diarized_by == procs[1].pid
        call = pool.submit(Stage.TRANSCRIBE, batch(*range(20)), options=TranscribeOptions())  # 1 s
        deadline = time.monotonic() + 10
        while not pool.stats()["workers"][0]["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.01)
        procs[0].kill()
        procs[0].wait()
        procs[0] = worker(0, "transcribe")  # compose's restart policy
        assert [t.chunk.index for t in call.result(timeout=30)] == list(range(20))
        assert pool.stats()["workers"][0]["restarts"] == 1
    finally:
        pool.close()
        for p in procs:
            p.wait(timeout=10)
