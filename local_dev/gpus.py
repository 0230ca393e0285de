"""Find the local devices (NVML) and plan one worker pool per device.

Worker processes are pinned with CUDA_VISIBLE_DEVICES=<GPU UUID>: NVML numbers GPUs in PCI bus order
(as nvidia-smi does) while CUDA by default puts the fastest first, so on a mixed box (RTX 2060 + 3060)
index 0 can mean two different cards. The UUID means one card to both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.pipeline.stages import ROLE_STAGES, Role, Stage

if TYPE_CHECKING:
    from local_dev.settings import PoolSettings
    from shared.core.config import Settings

@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" or "cpu"
    index: int  # nvidia-smi index for GPUs, a running number for CPU slots
    name: str = "cpu"
    uuid: str | None = None
    memory_total_mb: int | None = None

    @property
    def label(self) -> str:
        return f"cuda:{self.index} ({self.name})" if self.kind == "cuda" else "cpu"


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: the device it is pinned to and the stages it serves."""

    worker_id: int
    device: Device
    stages: tuple[Stage, ...]
    env: dict[str, str] = field(default_factory=dict)
    cpu_threads: int = 0

    def settings_for(self, settings: "Settings") -> "Settings":
        """The settings the worker runs with: its device, and on a CPU its share of the cores, with one
        transcription at a time (the worker processes are the parallel decodes, unless
        TRANSCRIBE_WORKERS says otherwise). Secrets only the API uses stay behind."""
        from pydantic import SecretStr

        # never read by a worker (API keys, webhook signing): not sent to one
        blanks = {"api_keys": SecretStr(""), "webhook_secret": None}
        update: dict[str, Any] = {"device": self.device.kind}
        update.update({k: v for k, v in blanks.items() if k in type(settings).model_fields})
        if self.cpu_threads and not settings.cpu_threads:
            update["cpu_threads"] = self.cpu_threads
        if self.device.kind == "cpu" and "transcribe_workers" in type(settings).model_fields:
            update["transcribe_workers"] = settings.transcribe_workers or 1
        return settings.model_copy(update=update)


def scan_gpus() -> list[Device]:
    """GPUs as NVML sees them, filtered by this process's CUDA_VISIBLE_DEVICES; [] without a driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no libnvidia-ml: no GPU
        return []
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                Device(
                    kind="cuda",
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else name,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                    memory_total_mb=int(mem.total // (1024 * 1024)),
                )
            )
    finally:
        pynvml.nvmlShutdown()
    return filter_visible(devices, os.environ.get("CUDA_VISIBLE_DEVICES"))


def filter_visible(devices: list[Device], visible: str | None) -> list[Device]:
    """Apply a CUDA_VISIBLE_DEVICES-style list (nvidia-smi indices or UUID prefixes) to `devices`."""
    if visible is None:
        return devices
    picked: list[Device] = []
    for token in (t.strip() for t in visible.split(",")):
        if not token:
            continue
        if token.isdigit():
            match = [d for d in devices if d.index == int(token)]
        else:
            match = [d for d in devices if d.uuid and d.uuid.startswith(token)]
        if not match:
            break  # CUDA stops at the first invalid entry too
        picked.extend(d for d in match if d not in picked)
    return picked


def gpu_usage(devices: list[Device]) -> dict[int, dict[str, float]]:
    """Live NVML numbers per GPU index: memory used (MB) and utilisation (%). {} without NVML."""
    gpus = [d for d in devices if d.kind == "cuda"]
    if not gpus:
        return {}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return {}
    usage: dict[int, dict[str, float]] = {}
    try:
        for d in gpus:
            handle = pynvml.nvmlDeviceGetHandleByIndex(d.index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            usage[d.index] = {"memory_used_mb": mem.used / 2**20, "utilization_pct": float(util.gpu)}
    except Exception:  # noqa: BLE001 - metrics are best effort
        pass
    finally:
        pynvml.nvmlShutdown()
    return usage


def plan_workers(
    settings: "Settings", gpus: list[Device] | None = None, *, pool: "PoolSettings | None" = None,
    workers: int | None = None,
) -> list[WorkerSpec]:
    """One pool of workers per GPU, or `cpu_workers` CPU workers when there is none (or DEVICE=cpu).

    With two or more GPUs the diarizer gets its own GPU (DIARIZE_GPU, default the last one) and runs
    at the same time as transcription on the others; with one GPU or on CPU every worker serves every
    stage. `workers` overrides WORKERS_PER_GPU (GPU) or CPU_WORKERS (CPU); `pool` defaults to
    PoolSettings() from the environment.
    """
    if pool is None:
        from local_dev.settings import PoolSettings

        pool = PoolSettings()
    if gpus is None:
        gpus = [] if settings.device == "cpu" else scan_gpus()
    if settings.device == "cuda" and not gpus:
        raise RuntimeError("DEVICE=cuda but NVML finds no GPU (driver missing, or CUDA_VISIBLE_DEVICES empty)")
    specs: list[WorkerSpec] = []
    if not gpus:
        n = workers or pool.cpu_workers
        threads = max(1, (os.cpu_count() or 1) // n)
        env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        for i in range(n):
            specs.append(WorkerSpec(i, Device("cpu", i), ROLE_STAGES[Role.ALL], dict(env), cpu_threads=threads))
        return specs

    per_gpu = workers or pool.workers_per_gpu
    diarize_index = None
    if len(gpus) >= 2:
        wanted = pool.diarize_gpu if pool.diarize_gpu is not None else gpus[-1].index
        if wanted not in [g.index for g in gpus]:
            raise RuntimeError(f"DIARIZE_GPU={wanted} is not among the GPUs found: {[g.index for g in gpus]}")
        diarize_index = wanted
    for gpu in gpus:
        if diarize_index is None:
            role = Role.ALL
        else:
            role = Role.DIARIZE if gpu.index == diarize_index else Role.TRANSCRIBE
        stages: tuple[Stage, ...] = ROLE_STAGES[role]
        env = {"CUDA_VISIBLE_DEVICES": gpu.uuid or str(gpu.index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        for _ in range(per_gpu):
            specs.append(WorkerSpec(len(specs), gpu, stages, dict(env)))
    return specs
