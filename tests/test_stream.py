"""Streaming results from the real service: NDJSON read line by line as it arrives, heartbeats while the
work goes on, Server-Sent Events, and `curl -N` as a client would use it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS
from jobs_support import API_KEY, keyed_client, keyed_server, repeated_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    return keyed_server()


@pytest.fixture(scope="module")
def client(server):
    with keyed_client(server) as c:
        yield c


def upload(client, path) -> str:
    with open(path, "rb") as f:
        r = client.post("/api/audio", files={"file": (path.name, f)})
    assert r.status_code == 201, r.text
    return r.json()["clip_id"]


def read_ndjson(client, params, headers=None) -> list[tuple[float, dict]]:
    """Each line with the time it arrived, read as it streams in."""
    started = time.monotonic()
    lines = []
    with client.stream("POST", "/api/transcribe/stream", params=params, headers=headers or {}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/x-ndjson"
        for line in r.iter_lines():
            if line:
                lines.append((time.monotonic() - started, json.loads(line)))
    return lines


def check_segments(events: list[dict]) -> list[dict]:
    assert events[0]["type"] == "start" and events[-1]["type"] == "done"
    assert {e["type"] for e in events} <= {"start", "heartbeat", "segment", "done"}
    segments = [e for e in events if e["type"] == "segment"]
    assert [s["index"] for s in segments] == list(range(len(segments)))
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(s["end"] > s["start"] and s["text"] for s in segments)
    assert events[-1]["segments"] == len(segments)
    return segments


def test_diarized_stream_with_heartbeats(client):
    clip_id = upload(client, TWO_SPEAKERS)
    lines = read_ndjson(client, {"clip_id": clip_id, "num_speakers": 2})
    events = [e for _, e in lines]
    segments = check_segments(events)
    assert events[0] == {"type": "start", "clip_id": clip_id, "duration": pytest.approx(28.04, abs=0.1)}
    first_segment = next(i for i, e in enumerate(events) if e["type"] == "segment")
    beats = [e for e in events[:first_segment] if e["type"] == "heartbeat"]
    assert beats, "no heartbeat while the work went on"  # HEARTBEAT_S=0.25 on this server
    assert all(set(b["progress"]) == {"done", "total"} and b["progress"]["total"] > 28 for b in beats)
    assert {s["speaker"] for s in segments} == {"SPEAKER_00", "SPEAKER_01"} == set(events[-1]["speakers"])
    assert events[-1]["language"] == "en" and events[-1]["duration"] == pytest.approx(28.04, abs=0.1)
    assert all("words" not in s for s in segments)


def test_segments_arrive_as_soon_as_they_are_final(client, tmp_path):
    clip_id = upload(client, repeated_clip(tmp_path / "long.wav", 3))  # 84 s: 3 chunks, one per batch here
    lines = read_ndjson(client, {"clip_id": clip_id, "diarize": False, "word_timestamps": True})
    segments = check_segments([e for _, e in lines])
    assert len(segments) >= 15 and all(s["words"] and s["speaker"] is None for s in segments)
    first_at = next(t for t, e in lines if e["type"] == "segment")
    done_at = lines[-1][0]
    assert first_at < done_at - 0.5, (first_at, done_at)  # the first chunk's segments did not wait for the rest


def test_server_sent_events(client):
    clip_id = upload(client, ONE_SPEAKER)
    headers = {"accept": "text/event-stream"}
    with client.stream("POST", "/api/transcribe/stream", params={"clip_id": clip_id, "diarize": False}, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        raw = r.read().decode()
    events = []
    for block in raw.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        event = json.loads(data_line.removeprefix("data: "))
        assert event["type"] == name_line.removeprefix("event: ")
        events.append(event)
    segments = check_segments(events)
    assert len(segments) == 4 and "Dashwood" in segments[0]["text"]


def test_a_client_that_leaves_early_does_not_hurt_the_server(client):
    clip_id = upload(client, TWO_SPEAKERS)
    with client.stream("POST", "/api/transcribe/stream", params={"clip_id": clip_id}) as r:
        first = json.loads(next(r.iter_lines()))
        assert first["type"] == "start"
    # the next stream still works and ends normally
    events = [e for _, e in read_ndjson(client, {"clip_id": clip_id, "diarize": False})]
    assert len(check_segments(events)) == 6


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_no_buffer(server, client):
    clip_id = upload(client, ONE_SPEAKER)
    out = subprocess.run(
        ["curl", "-sS", "-N", "-X", "POST", "-H", f"Authorization: Bearer {API_KEY}",
         f"{server.url}/api/transcribe/stream?clip_id={clip_id}&diarize=false"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(check_segments(events)) == 4
