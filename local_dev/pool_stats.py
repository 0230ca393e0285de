"""What the pool counts per worker, and the stats it reports (/api/workers, /metrics)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from local_dev.gpus import WorkerSpec, gpu_usage


@dataclass(eq=False)
class WorkerCounters:
    restarts: int = 0
    calls_done: int = 0
    calls_failed: int = 0
    chunks_done: int = 0
    run_seconds: float = 0.0  # inside the worker's stage calls, as it reports them
    busy_seconds: float = 0.0  # with at least one call in flight, as the pool sees it
    busy_since: float | None = None
    started_at: float = 0.0

    def busy(self) -> None:
        if self.busy_since is None:
            self.busy_since = time.monotonic()

    def idle(self) -> None:
        if self.busy_since is not None:
            self.busy_seconds += time.monotonic() - self.busy_since
            self.busy_since = None

    def busy_total(self, now: float) -> float:
        return self.busy_seconds + (now - self.busy_since if self.busy_since is not None else 0.0)


def worker_row(spec: WorkerSpec, counters: WorkerCounters, *, state: str, info: dict, process: str | None,
               queue_depth: int, last_error: str | None, now: float) -> dict[str, Any]:
    return {
        "worker": spec.worker_id,
        "device": spec.device.label,
        "stages": [s.value for s in spec.stages],
        "state": state,
        "pid": info.get("pid"),
        "process": process,
        "queue_depth": queue_depth,
        "busy_seconds": round(counters.busy_total(now), 3),
        "run_seconds": round(counters.run_seconds, 3),
        "calls_done": counters.calls_done,
        "calls_failed": counters.calls_failed,
        "chunks_done": counters.chunks_done,
        "restarts": counters.restarts,
        "uptime_seconds": round(now - counters.started_at, 1) if state == "ready" else 0.0,
        "last_error": last_error,
    }


def with_gpu_usage(rows: list[dict[str, Any]], specs: list[WorkerSpec]) -> list[dict[str, Any]]:
    """Live NVML memory and utilisation on the rows of GPU workers (read outside the pool's lock)."""
    usage = gpu_usage(list({s.device for s in specs}))
    for row, spec in zip(rows, specs, strict=True):
        if spec.device.kind == "cuda" and spec.device.index in usage:
            row["gpu"] = usage[spec.device.index]
    return rows
