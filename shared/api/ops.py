"""Operations: worker stats as JSON (/api/workers) and Prometheus metrics (/metrics).

Exported (all prefixed whospoke_; local_dev/observability/ scrapes them into a Grafana dashboard):
    http_requests_total{method,route,status}      requests, by route template
    http_request_seconds{method,route}            latency histogram (until the response has ended)
    http_responses_in_progress{method,route}      responses being sent (a stream counts while it is open)
    worker_queue_depth / worker_busy_seconds_total / worker_calls_total / worker_restarts_total {worker,device}
    gpu_utilization_ratio / gpu_memory_used_bytes / gpu_memory_total_bytes / gpu_temperature_celsius {gpu,name}
                                                  from NVML, per device this host has; absent without GPUs
    jobs{status}                                  jobs in the job store, by status
    webhook_deliveries_total{outcome}             delivery attempts: delivered, retry, failed
    audio_seconds_total                           seconds of audio transcribed (each transcription once)
    transcriptions_cancelled_total{route}         synchronous transcriptions stopped: their client disconnected
"""

from __future__ import annotations

import logging
import threading
import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.cancel_on_disconnect import CANCELLED
from shared.core.domain import SAMPLE_RATE
from shared.jobs.model import JobStatus
from shared.jobs.webhooks import DELIVERIES
from shared.pipeline.stages import Stage

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])

GPU_METRICS = (
    "whospoke_gpu_utilization_ratio",
    "whospoke_gpu_memory_used_bytes",
    "whospoke_gpu_memory_total_bytes",
    "whospoke_gpu_temperature_celsius",
)
# Process-wide: a runner (and its counter) may serve several apps in one process (tests do)
AUDIO_SECONDS = Counter("whospoke_audio_seconds", "seconds of audio transcribed", registry=None)


@router.get("/api/workers")
def workers(request: Request) -> dict:
    """Per-worker device, stages, state, queue depth, busy seconds, calls and restarts."""
    return request.app.state.service.runner.stats()


class WorkerCollector:
    """Reads the runner's stats at scrape time, so the numbers are never stale."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        service = getattr(self.app.state, "service", None)
        if service is None:
            return
        labels = ["worker", "device"]
        depth = GaugeMetricFamily("whospoke_worker_queue_depth", "stage calls queued or running", labels=labels)
        busy = CounterMetricFamily("whospoke_worker_busy_seconds", "seconds spent running stages", labels=labels)
        done = CounterMetricFamily("whospoke_worker_calls", "stage calls finished", labels=[*labels, "outcome"])
        restarts = CounterMetricFamily("whospoke_worker_restarts", "worker restarts", labels=labels)
        for row in service.runner.stats().get("workers", []):
            key = [str(row["worker"]), str(row["device"])]
            depth.add_metric(key, row.get("queue_depth", 0))
            busy.add_metric(key, row.get("busy_seconds", 0.0))
            done.add_metric([*key, "ok"], row.get("calls_done", 0))
            done.add_metric([*key, "failed"], row.get("calls_failed", 0))
            restarts.add_metric(key, row.get("restarts", 0))
        yield from (depth, busy, done, restarts)


class JobCollector:
    """Jobs per status, counted by the job store at scrape time (stores that cannot count export none)."""

    STATUSES = tuple(s.value for s in JobStatus)

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        jobs = getattr(self.app.state, "jobs", None)
        counts = jobs.store.count_by_status() if jobs is not None else None
        if counts is None:
            return
        family = GaugeMetricFamily("whospoke_jobs", "jobs in the job store, by status", labels=["status"])
        for status in self.STATUSES:
            family.add_metric([status], counts.get(status, 0))
        yield family


class GpuCollector:
    """Utilisation, memory and temperature of every GPU NVML sees on this host; nothing without one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._nvml = None
        self._tried = False

    def _init(self):
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                except Exception as exc:  # noqa: BLE001 - no driver, no library, no GPU: no GPU metrics
                    log.debug("no NVML (%s): GPU metrics off", exc)
        return self._nvml

    def collect(self):
        nvml = self._init()
        if nvml is None:
            return
        labels = ["gpu", "name"]
        helps = ("GPU busy share (0-1), NVML", "GPU memory in use", "GPU memory", "GPU temperature")
        util, used, total, temp = (GaugeMetricFamily(n, h, labels=labels) for n, h in zip(GPU_METRICS, helps))
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(handle)
                key = [str(i), name.decode() if isinstance(name, bytes) else str(name)]
                util.add_metric(key, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                used.add_metric(key, float(memory.used))
                total.add_metric(key, float(memory.total))
                temp.add_metric(key, float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
        except Exception:  # noqa: BLE001 - a scrape never fails for a GPU query
            log.exception("reading GPU metrics failed")
        yield from (util, used, total, temp)


class HttpMetrics:
    """Requests by route template, latency until the response has ended, responses in progress."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter(
            "whospoke_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "whospoke_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry,
            buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )  # fmt: skip
        self.in_progress = Gauge(
            "whospoke_http_responses_in_progress", "responses being sent (open streams included)",
            ["method", "route"], registry=registry,
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}
        started: list = []

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                gauge = self.in_progress.labels(scope["method"], _route_template(scope))
                gauge.inc()
                started.append(gauge)
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            route = _route_template(scope)
            self.requests.labels(scope["method"], route, str(status["code"])).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
            for gauge in started:
                gauge.dec()


def meter_audio(runner) -> None:
    """Count the audio of every transcription: each splits its audio once (the vad_split stage), whatever
    the runner. The runner's own `_submit` is wrapped once, so its type and attributes stay as they are."""

    if getattr(runner, "_audio_metered", False):
        return
    original = runner._submit

    def submit(stage, *args, **kwargs):
        future = original(stage, *args, **kwargs)
        seconds = _seconds(args[0]) if stage is Stage.VAD_SPLIT and args else 0.0
        if seconds > 0 and hasattr(future, "add_done_callback"):
            future.add_done_callback(lambda f: None if f.cancelled() or f.exception() else AUDIO_SECONDS.inc(seconds))
        return future

    runner._submit = submit
    runner._audio_metered = True


def _seconds(audio) -> float:

    samples = getattr(audio, "num_samples", None)
    if samples is None:
        shape = getattr(audio, "shape", None)
        samples = shape[0] if shape else 0
    try:
        return float(samples) / SAMPLE_RATE
    except (TypeError, ValueError):
        return 0.0


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    for collector in (WorkerCollector(app), JobCollector(app), GpuCollector(), AUDIO_SECONDS, DELIVERIES, CANCELLED):
        registry.register(collector)
    app.add_middleware(HttpMetrics, registry=registry)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (/api/audio/{clip_id}), so ids do not explode the label set."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
