"""The Docker launcher: the same worker entry point, one container per GPU.

`python -m local_dev serve --docker` builds the worker image (images/Dockerfile.worker, which installs
images/requirements/worker*.txt rendered from images/pins.py: the pins have one source) and runs one
container per worker spec with `--gpus device=N`, on the host network, where it connects back to the
serving process's listener (multiprocessing.connection, HMAC-authenticated with WORKER_AUTHKEY, which
reaches the container through the environment, never the command line). The pool restarts a container
that dies, exactly as it restarts a worker process.

`docker compose -f local_dev/docker-compose.yml --env-file .env up --build` does the same without a
host Python: an `api` service (the pool waits for external workers) and one worker service per GPU
that Docker restarts (WITH_PYANNOTE=1 in .env builds pyannote.audio in, for DIARIZER=pyannote). The committed file is `render_compose(2)`; `python -m local_dev compose --gpus N`
prints it for another count.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_dev.gpus import WorkerSpec
from local_dev.settings import DEFAULT_IMAGE
from shared.pipeline.stages import Role, role_of

if TYPE_CHECKING:
    from shared.core.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "images/Dockerfile.worker"
CONTAINER_HF_HOME = "/cache/huggingface"
CONTAINER_WHISPER = "/models/whisper"
CONTAINER_PYANNOTE = "/models/pyannote"
COMPOSE_WORKER_PORT = 7100
NAME_PREFIX = "whospoke-worker"


def build_command(settings: "Settings", image: str = DEFAULT_IMAGE, *, dockerfile: str = DOCKERFILE,
                  context: str = ".") -> list[str]:
    """The image build; pyannote.audio (and its torch) goes in only when the diarizer needs it."""
    cmd = ["docker", "build", "-f", dockerfile, "-t", image]
    if settings.resolved_diarizer == "pyannote":
        cmd += ["--build-arg", "WITH_PYANNOTE=1"]
    return cmd + [context]


def host_hf_home(settings: "Settings") -> Path:
    return Path(settings.hf_home or os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def _model_mounts(settings: "Settings") -> tuple[list[str], dict[str, Any]]:
    """Bind-mount local model folders/files into the container and point the settings at them."""
    mounts, update = [], {"hf_home": Path(CONTAINER_HF_HOME)}
    if Path(settings.whisper_model).is_dir():
        mounts += ["-v", f"{Path(settings.whisper_model).resolve()}:{CONTAINER_WHISPER}:ro"]
        update["whisper_model"] = CONTAINER_WHISPER
    if settings.pyannote_model and Path(settings.pyannote_model).exists():
        path = Path(settings.pyannote_model).resolve()
        target = f"{CONTAINER_PYANNOTE}/{path.name}" if path.is_file() else CONTAINER_PYANNOTE
        mounts += ["-v", f"{path.parent if path.is_file() else path}:{CONTAINER_PYANNOTE}:ro"]
        update["pyannote_model"] = target
    return mounts, update


def run_command(spec: WorkerSpec, address: tuple[str, int], settings: "Settings", image: str = DEFAULT_IMAGE
                ) -> list[str]:
    """`docker run` for one worker. --network host: the container reaches the pool on 127.0.0.1."""
    cmd = ["docker", "run", "--rm", "--init", "--name", f"{NAME_PREFIX}-{spec.worker_id}", "--network", "host"]
    if spec.device.kind == "cuda":
        # Inside, the container sees just this GPU (as index 0): no CUDA_VISIBLE_DEVICES needed.
        cmd += ["--gpus", f"device={spec.device.uuid or spec.device.index}"]
    env = {k: v for k, v in spec.env.items() if not k.startswith("CUDA_")}
    env["HF_HOME"] = CONTAINER_HF_HOME
    for key, value in sorted(env.items()):
        cmd += ["-e", f"{key}={value}"]
    cmd += ["-e", "WORKER_AUTHKEY"]  # value taken from the docker client's environment
    cmd += ["-v", f"{host_hf_home(settings)}:{CONTAINER_HF_HOME}"]
    storage = Path(settings.audio_storage_path).resolve()  # stages read clips by path: the same path inside
    cmd += ["-v", f"{storage}:{storage}:ro"]
    cmd += _model_mounts(settings)[0]
    cmd += [image, "python", "-m", "local_dev", "worker",
            "--connect", f"{address[0]}:{address[1]}", "--id", str(spec.worker_id),
            "--role", role_of(spec.stages).value]
    if spec.device.kind == "cuda":
        cmd += ["--gpu-index", str(spec.device.index)]
    return cmd


class _ContainerHandle:
    """The attached `docker run` client: it lives as long as the container does."""

    def __init__(self, process: subprocess.Popen, name: str, docker: str):
        self.process = process
        self.name = name
        self.docker = docker
        self.description = f"container {name}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def join(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        subprocess.run([self.docker, "rm", "-f", self.name], capture_output=True, check=False)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class DockerLauncher:
    name = "docker"

    def __init__(self, settings: "Settings", *, image: str = DEFAULT_IMAGE, build: bool = True, docker: str = "docker",
                 context: Path = REPO_ROOT):
        self.settings = settings
        self.image = image
        self.docker = docker
        self.context = context
        self._built = not build

    def build(self) -> None:
        cmd = build_command(self.settings, self.image)
        cmd[0] = self.docker
        subprocess.run(cmd, cwd=self.context, check=True)
        self._built = True

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes):
        if not self._built:
            self.build()
        cmd = run_command(spec, address, self.settings, self.image)
        cmd[0] = self.docker
        name = f"{NAME_PREFIX}-{spec.worker_id}"
        subprocess.run([self.docker, "rm", "-f", name], capture_output=True, check=False)  # a stale one
        env = {**os.environ, "WORKER_AUTHKEY": authkey.decode()}
        return _ContainerHandle(subprocess.Popen(cmd, env=env), name, self.docker)

    def worker_settings(self, settings: "Settings") -> "Settings":
        return settings.model_copy(update=_model_mounts(settings)[1])


def compose_config(gpus: int, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """docker compose services: the API (waiting for workers) and one worker per GPU.

    With two or more GPUs the last one diarizes and the others transcribe; with one it does both.
    """
    authkey = "${WORKER_AUTHKEY:?set WORKER_AUTHKEY in .env (python -c 'import secrets; print(secrets.token_hex(16))')}"
    build = {"context": "..", "dockerfile": DOCKERFILE, "args": {"WITH_PYANNOTE": "${WITH_PYANNOTE:-0}"}}
    services: dict[str, Any] = {
        "api": {
            "image": image,
            "build": build,
            "command": ["python", "-m", "local_dev", "serve", "--external-workers", str(max(gpus, 1)),
                        "--listen", "0.0.0.0"],
            "env_file": [{"path": "../.env", "required": False}],
            "environment": {
                "HOST": "0.0.0.0",  # inside the container; published on the host's 127.0.0.1 only (ports)
                "ALLOW_OPEN_BIND": "true",  # so no API_KEYS are needed, as on 127.0.0.1 (set them to publish wider)
                "PORT": "8000",
                "WORKER_PORT": str(COMPOSE_WORKER_PORT),
                "WORKER_AUTHKEY": authkey,
                "AUDIO_STORAGE_PATH": "/data",
                "HF_HOME": CONTAINER_HF_HOME,  # sent to the workers with the rest of the settings
            },
            "ports": ["127.0.0.1:8000:8000"],
            "volumes": ["audio-data:/data"],  # a named volume: the image's user owns it
            "restart": "unless-stopped",
        }
    }
    for i in range(gpus):
        role = Role.ALL if gpus == 1 else (Role.DIARIZE if i == gpus - 1 else Role.TRANSCRIBE)
        services[f"worker-gpu{i}"] = {
            "image": image,
            "command": ["python", "-m", "local_dev", "worker", "--connect", f"api:{COMPOSE_WORKER_PORT}",
                        "--id", str(i), "--role", role.value, "--gpu-index", str(i)],
            "environment": {"WORKER_AUTHKEY": authkey, "HF_HOME": CONTAINER_HF_HOME},
            # stages read clips by path (the API's /data): the same volume, read-only
            "volumes": [f"hf-cache:{CONTAINER_HF_HOME}", "audio-data:/data:ro"],
            "depends_on": ["api"],
            "restart": "unless-stopped",
            "deploy": {"resources": {"reservations": {"devices": [
                {"driver": "nvidia", "device_ids": [str(i)], "capabilities": ["gpu"]}]}}},
        }
    return {"name": "whospoke", "services": services, "volumes": {"hf-cache": {}, "audio-data": {}}}


def render_compose(gpus: int = 2, image: str = DEFAULT_IMAGE) -> str:
    import yaml

    header = (
        f"# Generated by `python -m local_dev compose --gpus {gpus}` (local_dev/docker_launcher.py); do not edit.\n"
        "# From the repository root: docker compose -f local_dev/docker-compose.yml --env-file .env up --build\n"
    )
    return header + yaml.safe_dump(compose_config(gpus, image), sort_keys=False, width=120)
