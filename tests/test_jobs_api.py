"""Every bad request to the jobs, streaming and OpenAI routes is a 4xx in the error shape. A real uvicorn
server on loopback, with a runner that has no models: nothing here needs them, so this runs fast.
A job or a stream that does reach the runner fails, which tests how failures are reported too."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import Future

import pytest
from audio_fixtures import ONE_SPEAKER
from jobs_support import WEBHOOK_SECRET, ThreadedServer, assert_error, wait_for_job

from shared.api.app import create_app
from shared.core.config import Settings
from shared.pipeline.runner import Runner


class NoModels(Runner):
    """A runner whose every stage fails: what a broken worker looks like to the service."""

    def _submit(self, stage, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_exception(RuntimeError(f"no models in this test ({stage.value})"))
        return future


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(
        _env_file=None,
        audio_storage_path=tmp_path_factory.mktemp("jobs-api"),
        webhook_secret=WEBHOOK_SECRET,
        max_upload_mb=1,
    )
    with ThreadedServer(create_app(settings, runner=NoModels())) as s:
        s.storage = settings.audio_storage_path
        yield s


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def clip_id(client):
    with open(ONE_SPEAKER, "rb") as f:
        return client.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]


def submit(client, params=None, **kwargs):
    return client.post("/api/transcriptions", params=params or {}, **kwargs)


@pytest.mark.parametrize(
    "params,status,code",
    [
        ({}, 422, "invalid_parameter"),  # neither a file nor a clip_id
        ({"clip_id": "nope"}, 400, "invalid_clip_id"),
        ({"clip_id": "0" * 32}, 404, "clip_not_found"),
        ({"num_speakers": 0}, 422, "invalid_parameter"),
        ({"min_speakers": 4, "max_speakers": 2}, 422, "invalid_parameter"),
        ({"language": "xx"}, 422, "unsupported_language"),
        ({"language": "de"}, 422, "unsupported_language"),  # tiny.en is English-only
        ({"format": "docx"}, 422, "invalid_parameter"),
        ({"wait": "maybe"}, 422, "invalid_parameter"),
        ({"webhook_url": "ftp://example.com/hook"}, 422, "invalid_webhook_url"),
        ({"webhook_url": "http://127.0.0.1:9/hook"}, 422, "invalid_webhook_url"),
        ({"webhook_url": "http://169.254.169.254/latest"}, 422, "invalid_webhook_url"),
        ({"webhook_url": "http://localhost/hook"}, 422, "invalid_webhook_url"),
        ({"webhook_url": "https://example.com/" + "x" * 2100}, 422, "invalid_parameter"),
    ],
)
def test_bad_submissions(client, clip_id, params, status, code):
    if "clip_id" not in params and params:
        params = {"clip_id": clip_id, **params}
    assert_error(submit(client, params), status, code)


def test_bad_uploads_leave_nothing_behind(client, server, clip_id):
    audio = ONE_SPEAKER.read_bytes()
    assert_error(submit(client, files={"file": ("empty.wav", b"")}), 400, "empty_file")
    assert_error(submit(client, files={"file": ("a.mp3", b"not audio\n" * 50)}), 415, "unsupported_media")
    assert_error(submit(client, {"clip_id": clip_id}, files={"file": ("a.flac", audio)}), 422, "invalid_parameter")
    r = submit(client, files={"file": ("a.flac", audio)}, data={"num_speakers": "0"})  # form fields: same checks
    assert "num_speakers" in assert_error(r, 422, "invalid_parameter")["message"]
    r = submit(client, files={"file": ("a.flac", audio)}, data={"colour": "blue"})
    assert "unknown form field(s): colour" in assert_error(r, 422, "invalid_parameter")["message"]
    r = submit(client, {"diarize": "false"}, files={"file": ("a.flac", audio)}, data={"diarize": "true"})
    assert "diarize" in assert_error(r, 422, "conflicting_parameter")["message"]
    r = submit(client, files={"file": ("a.flac", audio)}, data={"webhook_url": "http://10.0.0.1/x"})
    assert_error(r, 422, "invalid_webhook_url")
    assert_error(submit(client, files={"file": ("big.wav", b"\0" * (1024 * 1024 + 1))}), 413, "file_too_large")
    assert list((server.storage / "incoming").iterdir()) == []
    assert len(list((server.storage / "clips").glob("*.json"))) == 1  # only the module's clip


def test_every_option_is_accepted_as_a_form_field(client, clip_id):
    fields = {"clip_id": clip_id, "diarize": "false", "language": "en", "word_timestamps": "true",
              "num_speakers": "2", "initial_prompt": "Marianne", "format": "srt", "task": "transcribe"}  # fmt: skip
    multipart = submit(client, files={k: (None, v) for k, v in fields.items()})
    urlencoded = submit(client, data=fields)
    mixed = submit(client, {"clip_id": clip_id, "diarize": "0", "num_speakers": 2}, data=fields)  # agreeing twice
    for r in (multipart, urlencoded, mixed):
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["clip_id"] == clip_id and job["format"] == "srt"
        assert job["options"]["diarize"] is False and job["options"]["word_timestamps"] is True
        assert job["options"]["language"] == "en" and job["options"]["speakers"]["num_speakers"] == 2
        assert job["options"]["initial_prompt"] == "Marianne"
    wait = submit(client, data={"clip_id": clip_id, "wait": "true", "diarize": "false"})
    assert wait.status_code == 200 and wait.json()["status"] == "failed"  # wait=true as a form field: it waited


@pytest.mark.parametrize(
    "query,form,name",
    [
        ({"diarize": "true"}, {"diarize": "false"}, "diarize"),
        ({"num_speakers": "2"}, {"num_speakers": "3"}, "num_speakers"),
        ({"format": "srt"}, {"format": "vtt"}, "format"),
        ({"webhook_url": "https://a.example/x"}, {"webhook_url": "https://b.example/x"}, "webhook_url"),
        ({"clip_id": "a" * 32}, {"clip_id": "b" * 32}, "clip_id"),
    ],
)
def test_an_option_given_both_ways_differently_is_refused(client, query, form, name):
    error = assert_error(submit(client, query, data=form), 422, "conflicting_parameter")
    assert name in error["message"]


@pytest.mark.parametrize(
    "path,status,code",
    [
        ("/api/jobs/nothex", 400, "invalid_job_id"),
        (f"/api/jobs/{'0' * 32}", 404, "job_not_found"),
        (f"/api/jobs/{'0' * 32}/result", 404, "job_not_found"),
        (f"/api/jobs/{'0' * 32}/deliveries", 404, "job_not_found"),
        ("/api/jobs/nothex/result?format=pdf", 422, "invalid_parameter"),
    ],
)
def test_bad_job_reads(client, path, status, code):
    assert_error(client.get(path), status, code)


def test_bad_cancels(client):
    assert_error(client.delete("/api/jobs/xyz"), 400, "invalid_job_id")
    assert_error(client.delete(f"/api/jobs/{'0' * 32}"), 404, "job_not_found")


def test_a_job_that_fails_says_why_without_internal_detail(client, clip_id, caplog):
    r = submit(client, {"clip_id": clip_id, "wait": True})
    assert r.status_code == 200, r.text  # ended within the wait
    job = r.json()
    assert job["status"] == "failed" and job["error"]["code"] == "internal_error" and job["result"] is None
    message = job["error"]["message"]
    assert "no models in this test" not in message and "RuntimeError" not in message
    reference = re.search(r"reference ([0-9a-f]{12})", message).group(1)
    logged = [rec for rec in caplog.records if reference in rec.getMessage()]  # the detail is in the log
    assert logged and "no models in this test" in str(logged[0].exc_info[1])
    assert_error(client.get(job["links"]["result"]), 409, "job_failed")
    assert_error(client.delete(job["links"]["self"]), 409, "job_finished")
    assert client.get(job["links"]["deliveries"]).json() == {"job_id": job["job_id"], "webhook": None, "attempts": []}


def test_a_submitted_job_is_queued_first(client, clip_id):
    r = submit(client, {"clip_id": clip_id})
    assert r.status_code == 202 and r.headers["location"] == r.json()["links"]["self"]
    body = r.json()
    assert body["status"] in ("queued", "running", "failed") and body["progress"]["total"] == pytest.approx(22.0, abs=0.1)
    assert set(body["links"]) == {"self", "result", "deliveries", "clip"}
    wait_for_job(client, body["job_id"])


@pytest.mark.parametrize(
    "params,status,code",
    [
        ({}, 422, "invalid_parameter"),
        ({"clip_id": "nope"}, 400, "invalid_clip_id"),
        ({"clip_id": "0" * 32}, 404, "clip_not_found"),
        ({"num_speakers": 0}, 422, "invalid_parameter"),
        ({"language": "xx"}, 422, "unsupported_language"),
        ({"word_timestamps": "sometimes"}, 422, "invalid_parameter"),
    ],
)
def test_bad_stream_requests(client, clip_id, params, status, code):
    if "clip_id" not in params and params:
        params = {"clip_id": clip_id, **params}
    assert_error(client.post("/api/transcribe/stream", params=params), status, code)


def test_a_failure_mid_stream_is_an_error_line(client, clip_id):
    with client.stream("POST", "/api/transcribe/stream", params={"clip_id": clip_id}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[0] == {"type": "start", "clip_id": clip_id, "duration": pytest.approx(22.0, abs=0.1)}
    assert lines[-1]["type"] == "error" and set(lines[-1]["error"]) == {"code", "message"}
    assert not any(line["type"] == "done" for line in lines)


# --- /v1: OpenAI's error shape, a superset of ours ---
def openai_error(response, status, param=None):
    error = assert_error(response, status)
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if param:
        assert error["param"] == param, error
    return error


@pytest.mark.parametrize(
    "data,status,param",
    [
        ({"model": "whisper-1", "response_format": "docx"}, 422, "response_format"),
        ({"model": "whisper-1", "temperature": "2"}, 422, "temperature"),
        ({"model": "whisper-1", "temperature": "warm"}, 422, "temperature"),
        ({"model": "whisper-1", "timestamp_granularities[]": "char"}, 422, "timestamp_granularities"),
        ({"model": "whisper-1", "stream": "true"}, 422, "stream"),
        ({"model": "whisper-1", "known_speaker_names[]": "Ann"}, 422, "known_speaker_names"),
        ({"model": "whisper-1", "diarize": "perhaps"}, 422, "diarize"),
        ({"model": "whisper-1", "num_speakers": "0"}, 422, "num_speakers"),
        ({"model": "whisper-1", "min_speakers": "3", "max_speakers": "2"}, 422, "num_speakers"),
        ({"model": "whisper-1", "language": "xx"}, 422, None),
    ],
)
def test_bad_openai_parameters(client, data, status, param):
    r = client.post("/v1/audio/transcriptions", data=data, files={"file": ("a.flac", ONE_SPEAKER.read_bytes())})
    openai_error(r, status, param)


def test_bad_openai_requests(client, server):
    url = "/v1/audio/transcriptions"
    openai_error(client.post(url, data={"model": "whisper-1"}), 422)  # not even multipart
    openai_error(client.post(url, data={"model": "whisper-1"}, files={"other": ("a", b"x")}), 422)
    openai_error(client.post(url, data={"model": "whisper-1"}, files={"file": ("a.wav", b"")}), 400)
    openai_error(client.post(url, data={"model": "whisper-1"}, files={"file": ("a.mp3", b"text" * 100)}), 415)
    # refused by Content-Length before routing: our plain error shape, which OpenAI's SDKs read as well
    assert_error(client.post(url, data={"model": "x"}, files={"file": ("a.wav", b"\0" * (1024 * 1024 + 1))}), 413)
    audio = ONE_SPEAKER.read_bytes()
    translations = "/v1/audio/translations"
    openai_error(client.post(translations, data={"language": "en"}, files={"file": ("a.flac", audio)}), 422, "language")
    r = client.post(translations, data={"response_format": "diarized_json"}, files={"file": ("a.flac", audio)})
    openai_error(r, 422, "diarized_json")
    openai_error(client.get("/v1/models/gpt-17"), 404)
    assert list((server.storage / "incoming").iterdir()) == []


@pytest.mark.parametrize(
    "query,data,status,param",
    [
        ({"diarize": "perhaps"}, {"model": "whisper-1"}, 422, "diarize"),  # query parameters: the same checks
        ({"num_speakers": "40"}, {"model": "whisper-1"}, 422, "num_speakers"),
        ({"response_format": "srt"}, {"model": "whisper-1", "response_format": "vtt"}, 422, "response_format"),
        ({"diarize": "true"}, {"model": "whisper-1", "diarize": "false"}, 422, "diarize"),
    ],
)
def test_openai_options_as_query_parameters(client, query, data, status, param):
    r = client.post("/v1/audio/transcriptions", params=query, data=data,
                    files={"file": ("a.flac", ONE_SPEAKER.read_bytes())})
    error = openai_error(r, status, param)
    if query.keys() & data.keys():
        assert error["code"] == "conflicting_parameter"


def test_openai_options_agreeing_both_ways_reach_the_transcription(server):
    with server.client() as c:  # its own connection: the server closes it after a 500
        r = c.post("/v1/audio/transcriptions", params={"diarize": "1", "response_format": "text"},
                   data={"model": "whisper-1", "diarize": "true"}, files={"file": ("a.flac", ONE_SPEAKER.read_bytes())})
    assert r.status_code == 500  # accepted; NoModels fails it


@pytest.mark.parametrize("route", ["/api/transcribe", "/api/transcribe/stream"])
@pytest.mark.parametrize(
    "query,form,status,code",
    [
        ({}, {"num_speakers": "0"}, 422, "invalid_parameter"),
        ({}, {"format": "docx"}, 422, "invalid_parameter"),
        ({}, {"language": "de"}, 422, "unsupported_language"),
        ({}, {"min_speakers": "4", "max_speakers": "2"}, 422, "invalid_parameter"),
        ({}, {"beam": "9"}, 422, "invalid_parameter"),
        ({"diarize": "true"}, {"diarize": "false"}, 422, "conflicting_parameter"),
        ({"language": "en"}, {"language": "fr"}, 422, "conflicting_parameter"),
    ],
)
def test_transcribe_options_as_form_fields(client, clip_id, route, query, form, status, code):
    r = client.post(route, params={"clip_id": clip_id, **query}, data=form)
    assert_error(r, status, code)
    r = client.post(route, params={"clip_id": clip_id, **query}, files={k: (None, v) for k, v in form.items()})
    assert_error(r, status, code)  # multipart: the same


def test_a_failed_openai_transcription_is_a_server_error(client):
    r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("a.flac", ONE_SPEAKER.read_bytes())})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


def test_webhooks_need_a_secret(tmp_path, clip_id):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    with ThreadedServer(create_app(settings, runner=NoModels())) as s, s.client() as c:
        with open(ONE_SPEAKER, "rb") as f:
            r = c.post("/api/transcriptions", params={"webhook_url": "https://example.com/h"}, files={"file": f})
        assert "WEBHOOK_SECRET" in assert_error(r, 422, "webhooks_disabled")["message"]
        assert list((tmp_path / "incoming").iterdir()) == [] and list((tmp_path / "clips").iterdir()) == []


def test_openapi_documents_the_new_routes(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/api/transcriptions", "/api/jobs/{job_id}", "/api/jobs/{job_id}/deliveries", "/api/transcribe/stream",
            "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models"} <= set(paths)  # fmt: skip
    form = paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "model", "response_format", "timestamp_granularities[]", "diarize"} <= set(form["properties"])
    assert "diarized_json" in form["properties"]["response_format"]["enum"]
    job = paths["/api/transcriptions"]["post"]
    assert "multipart/form-data" in job["requestBody"]["content"] and "202" in job["responses"]


def test_server_shuts_down_promptly(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path)
    started = time.monotonic()
    with ThreadedServer(create_app(settings, runner=NoModels())):
        pass
    assert time.monotonic() - started < 10
