"""Helpers for the jobs, webhook, streaming, OpenAI and auth tests; every server is real, on 127.0.0.1.

- `keyed_server()`: one real server (tests/live_server.py, real models) for the session, configured
  with API keys, a webhook secret, fast retries and short heartbeats (see KEYED_ENV). Started by the
  first test that asks, stopped at exit: the slow modules load the models once between them.
- `ThreadedServer`: uvicorn on a thread around an app built in-process, for tests that need real
  HTTP but no models (auth, parameter checks).
- `WebhookReceiver`: an HTTP server that answers POSTs with scripted status codes and records them.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
import time
import wave
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio
from live_server import LiveServer, free_port, live_server

API_KEY = "test-key-1-0123456789"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

KEYED_ENV = {
    "API_KEYS": f"{API_KEY},test-key-2-0123456789",
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "WEBHOOK_ALLOW_PRIVATE": "true",
    "WEBHOOK_BACKOFF_S": "0.2",
    "WEBHOOK_MAX_ATTEMPTS": "5",
    "HEARTBEAT_S": "0.25",
    "MAX_UPLOAD_MB": "5",
    "JOB_WAIT_MAX_S": "120",
    "BATCH_SIZE": "1",  # one chunk per batch: a long clip's segments stream out chunk by chunk
}
_keyed: LiveServer | None = None
_keyed_lock = threading.Lock()


def keyed_server() -> LiveServer:
    global _keyed
    with _keyed_lock:
        if _keyed is None:
            root = Path(tempfile.mkdtemp(prefix="whospoke-keyed-"))
            stack = ExitStack()
            _keyed = stack.enter_context(live_server(root / "storage", KEYED_ENV))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
            atexit.register(stack.close)
        return _keyed


def keyed_client(server: LiveServer, key: str | None = API_KEY) -> httpx.Client:
    return server.client(headers={"X-API-Key": key} if key else {}, timeout=180)


class ThreadedServer:
    """uvicorn serving an in-process app on a thread: real HTTP on loopback, lifespan included."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("threaded server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


class WebhookReceiver:
    """Answers the n-th POST with plan[n] (200 once the plan runs out); delay_s[n] holds that answer back."""

    def __init__(self, plan: list[int] | None = None, delay_s: list[float] | None = None):
        self.plan = list(plan or [])
        self.delay_s = list(delay_s or [])
        self.requests: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._cond:
                    n = len(receiver.requests)
                    status = receiver.plan[n] if n < len(receiver.plan) else 200
                    receiver.requests.append(
                        {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                         "path": self.path, "at": time.time(), "answered": status}
                    )  # fmt: skip
                    receiver._cond.notify_all()
                if n < len(receiver.delay_s):
                    time.sleep(receiver.delay_s[n])
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:  # the sender gave up waiting
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/whospoke"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout=timeout):
                raise AssertionError(f"expected {count} webhook requests, got {len(self.requests)}")
            return list(self.requests)

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]


def wait_for_job(client: httpx.Client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=180.0):
    """Poll GET /api/jobs/{id} until its status is one of `statuses`; return the job and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in statuses:
            return job, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s (seen {seen})")
        time.sleep(0.05)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def short_clip(path: Path, seconds: float = 8.0, source: Path = ONE_SPEAKER) -> Path:
    """The first seconds of a fixture as 16-bit WAV: a quick transcription for format tests."""
    return write_wav(path, load_audio(source)[: int(seconds * 16000)])


def repeated_clip(path: Path, times: int, source: Path = TWO_SPEAKERS) -> Path:
    """A fixture played `times` times in a row: a long clip that VAD cuts into `times` chunks."""
    return write_wav(path, np.concatenate([load_audio(source)] * times))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The service's one error shape, {"error": {"code", "message"}}, with the expected status."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"], error
    if code:
        assert error["code"] == code, error
    return error
