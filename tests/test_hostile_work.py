"""Work nobody waits for, and ids that are not quite ids, against a real server (tests/live_server.py).

- A synchronous transcription (POST /api/transcribe, POST /v1/audio/transcriptions) whose client
  disconnects is stopped: the pipeline's cancel token (shared/pipeline/cancel.py) is checked between
  stages and batches, waits on stage calls end at once, and queued stage calls are dropped. Shown by
  the server's own numbers: whospoke_transcriptions_cancelled_total counts each run, the runner's queue
  empties, and far fewer stage calls ran than the runs had queued.
- /healthz answers while every worker thread is held by a transcription (and a sync route waits for a
  thread meanwhile); the waiting route is served once the clients have gone.
- An id with a trailing newline ("a"*32 + "\\n", percent-encoded) is refused on every route taking one.

No timed assertions: the attacks last a few seconds, and the waits below are generous deadlines.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from jobs_support import assert_error, write_wav
from live_server import live_server
from long_recording import assemble, fixture_pieces

from shared.core.domain import TranscribeOptions
from shared.media.pcm import ArrayAudio
from shared.pipeline.cancel import Cancelled, CancelToken
from shared.pipeline.flow import PipelineRun

WORKER_THREADS = 40  # anyio's default thread limiter: what serves sync routes and run_in_threadpool
MINUTES = 4.0  # the long clip: at least 8 chunks of at most 30 s, one batch each (BATCH_SIZE=1)
BAD_ID = "a" * 32 + "%0A"


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    audio, _ = assemble(fixture_pieces(), minutes=MINUTES)
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", audio)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("hostile-work"), env={"BATCH_SIZE": "1"}) as s:
        yield s


@pytest.fixture(scope="module")
def clip_id(server, long_wav):
    with server.client() as c, open(long_wav, "rb") as f:
        r = c.post("/api/audio", files={"file": ("long.wav", f, "audio/wav")})
    assert r.status_code == 201, r.text
    return r.json()["clip_id"]


# --- helpers: raw HTTP requests whose client can simply go away ---
def send_raw(server, request: httpx.Request) -> socket.socket:
    """Open a connection and send `request` whole; the answer is never read."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = request.read()
    head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    if "content-length" not in request.headers:
        head.append(f"content-length: {len(body)}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def hang_up(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def metric(server, name: str, **labels) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    wanted = "".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and (match.group(1) or "") == wanted:
            return float(match.group(2))
    return 0.0


def workers(server) -> dict:
    return httpx.get(f"{server.url}/api/workers", timeout=60).json()["workers"][0]


def eventually(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)
    return value


def healthy(server) -> None:
    r = httpx.get(f"{server.url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"


# --- the pipeline stops at once for a cancelled token (in-process, real models) ---
@pytest.mark.slow
def test_a_cancelled_run_stops_and_drops_its_queued_batches(runner):
    audio, _ = assemble(fixture_pieces(), minutes=2.0)
    cancel = CancelToken()
    done: list[float] = []

    def on_progress(seconds: float, total: float) -> None:
        done.append(seconds)
        if seconds > 0:
            cancel.cancel("the test lost interest")  # from inside the run: after its first batch

    run = PipelineRun(ArrayAudio(audio), TranscribeOptions(diarize=False), runner, batch_size=1,
                      on_progress=on_progress, cancel=cancel)
    with pytest.raises(Cancelled, match="lost interest"):
        run.transcript()
    assert len(done) == 2  # the start and one batch: the other batches never ran
    eventually(lambda: runner.stats()["workers"][0]["queue_depth"] == 0, "the queued batches dropped")

    before = runner.stats()["workers"][0]["calls_done"]
    with pytest.raises(Cancelled):  # cancelled before it starts: no stage is called at all
        PipelineRun(ArrayAudio(audio), TranscribeOptions(), runner, cancel=cancel).transcript()
    assert runner.stats()["workers"][0]["calls_done"] == before


def test_a_wait_on_a_stage_ends_when_the_token_is_cancelled():
    cancel, never = CancelToken(), Future()  # a stage call stuck in a queue
    threading.Timer(0.2, cancel.cancel, args=("client disconnected",)).start()
    with pytest.raises(Cancelled, match="client disconnected"):
        cancel.wait(never)
    assert never.cancelled()  # not started: it never will be
    finished = Future()
    finished.set_result(7)
    assert cancel.wait(finished) == 7  # a result that is there is still returned


# --- through the server ---
@pytest.mark.slow
def test_healthz_answers_while_every_worker_thread_is_busy_and_disconnects_stop_the_work(server, clip_id):
    runs = WORKER_THREADS + 4  # more than the threads: some wait for one
    route = "/api/transcribe"
    cancelled_before = metric(server, "whospoke_transcriptions_cancelled_total", route=route)
    done_before = workers(server)["calls_done"]
    request = httpx.Request("POST", f"{server.url}{route}", params={"clip_id": clip_id, "diarize": "false"})
    sockets = [send_raw(server, request) for _ in range(runs)]
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = None  # a sync route (a worker thread answers it) still waiting after 3 s: all are busy
            for _ in range(100):
                attempt = pool.submit(httpx.get, f"{server.url}/api/workers", timeout=180)
                try:
                    assert attempt.result(timeout=3).status_code == 200  # threads were still free: again
                except TimeoutError:
                    waiting = attempt
                    break
            assert waiting is not None, "the transcriptions never held every worker thread"
            healthy(server)  # on the event loop: it answers all the same
            assert not waiting.done()
            hang_up(sockets)  # every client goes away
            assert waiting.result(timeout=180).status_code == 200  # and the threads are free again
    finally:
        hang_up(sockets)
    # every run was stopped, and told so in the server's metrics
    eventually(lambda: metric(server, "whospoke_transcriptions_cancelled_total", route=route) - cancelled_before
               == runs, f"{runs} runs cancelled")
    eventually(lambda: workers(server)["queue_depth"] == 0, "the runner's queue empty")
    # uncancelled, each run would have made >= MINUTES * 2 transcribe calls (chunks of <= 30 s, one a batch)
    calls = workers(server)["calls_done"] - done_before
    assert calls < runs * MINUTES * 2 / 2, calls
    healthy(server)


@pytest.mark.slow
def test_an_openai_upload_whose_client_leaves_is_stopped_and_its_copy_deleted(server, clip_id, long_wav):
    route = "/v1/audio/transcriptions"
    cancelled_before = metric(server, "whospoke_transcriptions_cancelled_total", route=route)
    clips = server.storage / "clips"
    stored_before = set(clips.iterdir())
    request = httpx.Request("POST", f"{server.url}{route}", data={"model": "whisper-1"},
                            files={"file": ("long.wav", long_wav.read_bytes(), "audio/wav")})
    sock = send_raw(server, request)
    try:  # the upload is decoded, stored for the run, and its stage calls are queued
        eventually(lambda: workers(server)["queue_depth"] > 0, "the transcription under way")
    finally:
        hang_up([sock])
    eventually(lambda: metric(server, "whospoke_transcriptions_cancelled_total", route=route) - cancelled_before
               == 1, "the run cancelled")
    eventually(lambda: workers(server)["queue_depth"] == 0, "the runner's queue empty")
    eventually(lambda: set(clips.iterdir()) == stored_before, "the upload's stored copy deleted")
    healthy(server)


@pytest.mark.slow
def test_a_client_that_stays_gets_its_transcript(server, tmp_path):
    """The watch on the connection does not disturb a client that waits (a short clip, to the end)."""
    audio, _ = assemble(fixture_pieces(), minutes=0.1)
    short = write_wav(tmp_path / "short.wav", audio)
    with server.client() as c, open(short, "rb") as f:
        r = c.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("short.wav", f)})
    assert r.status_code == 200 and r.json()["text"].strip(), r.text


# --- ids with a trailing newline ---
CLIP_ROUTES = [
    ("GET", f"/api/audio/{BAD_ID}"),
    ("DELETE", f"/api/audio/{BAD_ID}"),
    ("POST", f"/api/transcribe?clip_id={BAD_ID}"),
    ("POST", f"/api/transcribe/stream?clip_id={BAD_ID}"),
    ("POST", f"/api/transcriptions?clip_id={BAD_ID}"),
]
JOB_ROUTES = [
    ("GET", f"/api/jobs/{BAD_ID}"),
    ("DELETE", f"/api/jobs/{BAD_ID}"),
    ("GET", f"/api/jobs/{BAD_ID}/result"),
    ("GET", f"/api/jobs/{BAD_ID}/deliveries"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "code"), [(*r, "invalid_clip_id") for r in CLIP_ROUTES]
                         + [(*r, "invalid_job_id") for r in JOB_ROUTES])
def test_an_id_with_a_trailing_newline_is_refused(server, clip_id, method, path, code):
    """"a"*32 + "\\n" passed a `^...$` match (`$` matches before a final newline): every route refuses it,
    and the same id with the newline carries no one else's clip or job either."""
    with server.client() as c:
        error = assert_error(c.request(method, path), 400, code)
        assert "\n" not in error["message"]  # the id is quoted (repr), never echoed raw
        real = c.request(method, path.replace(BAD_ID, clip_id + "%0A"))  # a real clip's id, plus the newline
        assert_error(real, 400, code)
    healthy(server)
