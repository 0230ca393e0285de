"""The observability kit (local_dev/observability/) against what the service really exports: the
dashboard's queries name only metrics a real server's /metrics has (GPU ones where NVML sees a GPU),
promtool accepts the scrape config and the scraped text, and the new metrics follow the work."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from audio_fixtures import ONE_SPEAKER
from jobs_support import ThreadedServer
from prometheus_client.parser import text_string_to_metric_families

from shared.api.app import create_app
from shared.api.ops import GPU_METRICS, GpuCollector
from shared.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "local_dev" / "observability"
DASHBOARD = KIT / "grafana" / "dashboards" / "whospoke.json"
PROMTOOL = shutil.which("promtool")
STREAM = "/api/transcribe/stream"


@pytest.fixture(scope="module")
def server(tmp_path_factory, runner):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("observability"))
    with ThreadedServer(create_app(settings, runner=runner)) as s:
        yield s


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


@pytest.fixture(scope="module")
def exported(server) -> tuple[set[str], str]:
    """Sample names after some traffic: an upload, a streamed transcription, a 404."""
    with server.client() as c:
        with open(ONE_SPEAKER, "rb") as f:
            clip_id = c.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]
        c.post(STREAM, params={"clip_id": clip_id, "diarize": "false"}).raise_for_status()
        c.get(f"/api/jobs/{'0' * 32}")
        text = c.get("/metrics").text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}, text


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def test_dashboard_structure():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "whospoke" and board["title"] and board["schemaVersion"] >= 36
    panels = board["panels"]
    assert len(panels) >= 8 and len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["type"] == "timeseries" and p["title"] and p["targets"], p.get("title")
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("requests/s", "latency", "queue depth", "busy", "gpu utilisation", "gpu memory",
                   "gpu temperature", "jobs", "webhook", "streams", "audio seconds"):  # fmt: skip
        assert wanted in titles, wanted
    provisioning = (KIT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: prometheus" in provisioning  # the uid every panel names
    assert "/var/lib/grafana/dashboards" in (KIT / "grafana" / "provisioning" / "dashboards" / "whospoke.yml").read_text()


def test_every_dashboard_query_names_an_exported_metric(exported):
    names, _ = exported
    gpu = set(GPU_METRICS)
    for title, expr in dashboard_exprs():
        used = set(re.findall(r"\bwhospoke_[a-z0-9_]+", expr))
        assert used, (title, expr)
        missing = used - names - gpu
        assert not missing, (title, missing)
    if GpuCollector()._init() is not None:  # on a GPU host the GPU panels have data too
        assert gpu <= names, gpu - names
    else:
        assert not gpu & names  # absent on CPU: no made-up zeros


def test_the_metrics_follow_the_work(server):
    with server.client() as c:
        with open(ONE_SPEAKER, "rb") as f:
            clip_id = c.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]
        before = scrape(c)
        with c.stream("POST", STREAM, params={"clip_id": clip_id, "diarize": "false"}) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["type"] == "start"
            during = scrape(c)  # the stream is open
            assert any(json.loads(line)["type"] == "done" for line in lines if line)
        after = scrape(c)
    gauge = "whospoke_http_responses_in_progress"
    assert value(during, gauge, route=STREAM) == 1 and value(after, gauge, route=STREAM) == 0
    audio = value(after, "whospoke_audio_seconds_total") - value(before, "whospoke_audio_seconds_total")
    assert audio == pytest.approx(22.0, abs=0.5)  # the clip's length, counted once
    assert value(after, "whospoke_http_requests_total", route=STREAM, status="200") >= 1
    assert value(after, "whospoke_jobs", status="queued") == 0
    assert value(after, "whospoke_worker_busy_seconds_total") > value(before, "whospoke_worker_busy_seconds_total")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_config_and_the_metrics(exported, tmp_path):
    config = subprocess.run([PROMTOOL, "check", "config", str(KIT / "prometheus.yml")], capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr
    _, text = exported
    metrics = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert metrics.returncode == 0 and not metrics.stdout.strip(), metrics.stdout + metrics.stderr
