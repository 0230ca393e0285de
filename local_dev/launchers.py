"""How the pool's worker processes come to be: spawned here (ProcessLauncher), started by someone else
(ExternalLauncher: docker compose, a second box), or as containers (local_dev/docker_launcher.py).
Whatever starts it, the process connects back to the pool's listener itself (local_dev/wire.py)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

from local_dev.gpus import Device, WorkerSpec
from shared.pipeline.stages import ROLE_STAGES, Role

if TYPE_CHECKING:
    from shared.core.config import Settings

_ENV_LOCK = threading.Lock()


class WorkerHandle(Protocol):
    description: str

    def alive(self) -> bool: ...

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for an orderly exit."""

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts the process of one worker spec; the process connects back to `address` itself."""

    name: str

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes) -> WorkerHandle: ...

    def worker_settings(self, settings: Settings) -> Settings: ...


class _ProcessHandle:
    def __init__(self, process: multiprocessing.process.BaseProcess):
        self.process = process
        self.description = f"pid {process.pid}"

    def alive(self) -> bool:
        return self.process.is_alive()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class ProcessLauncher:
    """Spawns `local_dev.worker.spawn_main` with the 'spawn' start method (never fork: a forked CUDA
    context is unusable, and the pin must be in the environment before the child imports anything)."""

    name = "process"

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes) -> WorkerHandle:
        from local_dev.worker import spawn_main

        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(
            target=spawn_main,
            args=(address, authkey, spec.worker_id, spec.env),
            name=f"whospoke-worker-{spec.worker_id}",
        )
        # The spawned interpreter inherits os.environ as it is at start(): pin the device there.
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in spec.env}
            os.environ.update(spec.env)
            try:
                process.start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return _ProcessHandle(process)

    def worker_settings(self, settings: Settings) -> Settings:
        return settings


class ExternalHandle:
    """A worker this process did not start: nothing to wait for or kill (its starter restarts it)."""

    description = "external"

    def alive(self) -> bool:
        return True

    def join(self, timeout: float) -> None:
        pass

    def kill(self) -> None:
        pass


class ExternalLauncher:
    """Workers started by someone else (docker compose, a second box) connect on their own."""

    name = "external"

    def start(self, spec: WorkerSpec, address: tuple[str, int], authkey: bytes) -> WorkerHandle:
        return ExternalHandle()

    def worker_settings(self, settings: Settings) -> Settings:
        return settings


def external_spec(worker_id: int, info: dict[str, Any]) -> WorkerSpec:
    """The spec of a worker that connected on its own, from what its Hello says (`--role`, its GPU)."""
    role = info.get("role", Role.ALL.value)
    stages = ROLE_STAGES[Role(role)] if role in {r.value for r in Role} else ROLE_STAGES[Role.ALL]
    cuda = info.get("device") == "cuda"
    device = Device("cuda" if cuda else "cpu", int(info.get("gpu_index", worker_id)), info.get("gpu_name", "gpu"))
    return WorkerSpec(worker_id, device, stages)
