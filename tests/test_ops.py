"""Worker stats and Prometheus metrics, through the real server."""

from __future__ import annotations

import pytest
from audio_fixtures import ONE_SPEAKER
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


def test_worker_stats_and_metrics_follow_the_work(server):
    with server.client() as c:
        before = c.get("/api/workers").json()
        assert before["runner"] == "in-process"
        assert before["workers"][0]["device"] == "cpu" and before["workers"][0]["state"] == "ready"
        with open(ONE_SPEAKER, "rb") as f:
            clip_id = c.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]
        assert c.post("/api/transcribe", params={"clip_id": clip_id}).status_code == 200
        c.get(f"/api/audio/{clip_id}")
        after = c.get("/api/workers").json()["workers"][0]
        assert after["calls_done"] >= before["workers"][0]["calls_done"] + 3  # vad, transcribe, diarize
        assert after["busy_seconds"] > before["workers"][0]["busy_seconds"] and after["queue_depth"] == 0

        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.text)
            for s in family.samples
        }
        assert samples[("whospoke_worker_busy_seconds_total", (("device", "cpu"), ("worker", "0")))] > 0
        routes = {dict(labels).get("route") for name, labels in samples if name == "whospoke_http_requests_total"}
        assert "/api/audio/{clip_id}" in routes and "/api/transcribe" in routes  # templates, not ids
