"""Operations: worker stats as JSON (/api/workers) and Prometheus metrics (/metrics)."""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

router = APIRouter(tags=["ops"])


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


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("whospoke_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("whospoke_http_request_seconds", "HTTP request latency", ["method", "route"],
                        registry=registry, buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
    registry.register(WorkerCollector(app))

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = _route_template(request)
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)


def _route_template(request: Request) -> str:
    """The matched route's path template (/api/audio/{clip_id}), so ids do not explode the label set."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"
