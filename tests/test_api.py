"""The seed's API through a real uvicorn server on loopback, with httpx."""

from __future__ import annotations

import pytest
import srt
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, encode_as, load_reference
from live_server import live_server
from scoring import wer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def upload(client, path, name=None):
    with open(path, "rb") as f:
        return client.post("/api/audio", files={"file": (name or path.name, f)})


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_round_trip(client, tmp_path, fmt):
    path = encode_as(TWO_SPEAKERS, fmt, tmp_path / f"talk.{fmt}")
    r = upload(client, path)
    assert r.status_code == 201, r.text
    clip = r.json()
    assert clip["duration"] == pytest.approx(28.04, abs=0.1) and clip["filename"] == f"talk.{fmt}"
    clip_id = clip["clip_id"]
    assert client.get(f"/api/audio/{clip_id}").json()["clip_id"] == clip_id

    diarized = client.post("/api/transcribe", params={"clip_id": clip_id, "word_timestamps": True})
    assert diarized.status_code == 200, diarized.text
    body = diarized.json()
    assert body["language"] == "en" and body["duration"] == pytest.approx(28.04, abs=0.1)
    assert {s["speaker"] for s in body["segments"]} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(s["words"] for s in body["segments"])
    assert wer(load_reference(TWO_SPEAKERS)["text"], " ".join(s["text"] for s in body["segments"])) < 0.2

    plain = client.post("/api/transcribe", params={"clip_id": clip_id, "diarize": False, "format": "srt"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/x-subrip")
    subs = list(srt.parse(plain.text))
    assert subs and not any(s.content.startswith("[SPEAKER") for s in subs)

    assert client.delete(f"/api/audio/{clip_id}").status_code == 200
    assert_error(client.get(f"/api/audio/{clip_id}"), 404, "clip_not_found")
    assert_error(client.post("/api/transcribe", params={"clip_id": clip_id}), 404, "clip_not_found")


def test_clip_files_are_gone_after_delete(client, server):
    clip_id = upload(client, ONE_SPEAKER).json()["clip_id"]
    assert len(list((server.storage / "clips").glob(f"{clip_id}.*"))) == 3  # upload, its PCM decode, metadata
    client.delete(f"/api/audio/{clip_id}")
    assert list((server.storage / "clips").glob(f"{clip_id}.*")) == []


@pytest.fixture(scope="module")
def clip_id(client):
    return upload(client, ONE_SPEAKER).json()["clip_id"]


@pytest.mark.parametrize(
    "params,status,code",
    [
        ({"clip_id": "0" * 32}, 404, "clip_not_found"),
        ({"clip_id": "not-a-clip"}, 400, "invalid_clip_id"),
        ({"clip_id": "../../../etc/passwd"}, 400, "invalid_clip_id"),
        ({}, 422, "invalid_parameter"),
        ({"min_speakers": 3, "max_speakers": 2}, 422, "invalid_parameter"),
        ({"num_speakers": 5, "max_speakers": 2}, 422, "invalid_parameter"),
        ({"num_speakers": -1}, 422, "invalid_parameter"),
        ({"min_speakers": 0}, 422, "invalid_parameter"),
        ({"max_speakers": "two"}, 422, "invalid_parameter"),
        ({"format": "docx"}, 422, "invalid_parameter"),
        ({"language": "xx"}, 422, "unsupported_language"),
        ({"language": "fr"}, 422, "unsupported_language"),  # tiny.en is English-only
        ({"diarize": "perhaps"}, 422, "invalid_parameter"),
        ({"task": "summarise"}, 422, "invalid_parameter"),
    ],
)
def test_bad_transcribe_parameters(client, clip_id, params, status, code):
    params = {"clip_id": clip_id, **params} if "clip_id" not in params and params else params
    assert_error(client.post("/api/transcribe", params=params), status, code)


@pytest.mark.parametrize("path", ["/api/audio/xyz", f"/api/audio/{'f' * 32}"])
def test_bad_clip_ids_on_get_and_delete(client, path):
    expected = (400, "invalid_clip_id") if path.endswith("xyz") else (404, "clip_not_found")
    assert_error(client.get(path), *expected)
    assert_error(client.delete(path), *expected)


def test_bad_uploads(client, server):
    assert_error(client.post("/api/audio", files={"file": ("empty.wav", b"")}), 400, "empty_file")
    assert_error(client.post("/api/audio", files={"file": ("notes.mp3", b"just some text\n" * 100)}), 415, "unsupported_media")
    garbled = bytearray(ONE_SPEAKER.read_bytes())
    garbled[:64] = b"\xff" * 64
    assert_error(client.post("/api/audio", files={"file": ("broken.flac", bytes(garbled))}), 415, "unsupported_media")
    assert_error(client.post("/api/audio", files={"other": ("a.wav", b"x")}), 422, "invalid_parameter")
    assert_error(client.post("/api/audio", content=b"raw body", headers={"content-type": "audio/wav"}), 422, "invalid_parameter")
    assert list((server.storage / "incoming").iterdir()) == []  # refused uploads leave nothing behind


def test_unknown_route_and_method_use_the_error_shape(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.put("/api/audio/" + "0" * 32), 405, "method_not_allowed")


def test_server_stays_healthy_after_bad_input(client, clip_id):
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/api/transcribe", params={"clip_id": clip_id, "format": "txt"})
    assert r.status_code == 200 and r.text.startswith("SPEAKER_00: ")


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/audio", "/api/audio/{clip_id}", "/api/transcribe", "/healthz"} <= set(spec["paths"])
    upload_body = spec["paths"]["/api/audio"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload_body["schema"]["properties"]["file"]["format"] == "binary"
    assert client.get("/docs").status_code == 200


def test_upload_over_the_limit_is_refused_and_nothing_is_kept(tmp_path):
    big = encode_as(TWO_SPEAKERS, "wav", tmp_path / "big.wav")  # ~0.9 MB
    with live_server(tmp_path / "small", env={"MAX_UPLOAD_MB": "0.25"}) as small, small.client() as c:
        assert_error(upload(c, big), 413, "file_too_large")

        def chunks():  # no Content-Length: the limit must hold while the body streams
            boundary = b"--b0undary"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
            data = big.read_bytes()
            for i in range(0, len(data), 65536):
                yield data[i : i + 65536]
            yield b"\r\n" + boundary + b"--\r\n"

        r = c.post("/api/audio", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0undary"})
        assert_error(r, 413, "file_too_large")
        assert upload(c, ONE_SPEAKER).status_code == 201  # 0.2 MB still fits
        assert list((small.storage / "incoming").iterdir()) == []
        assert len(list((small.storage / "clips").glob("*.json"))) == 1


def test_options_as_form_fields_transcribe_the_same(client, clip_id):
    """The same options as query parameters, urlencoded form fields or multipart fields: one result."""
    options = {"diarize": "false", "format": "txt"}
    by_query = client.post("/api/transcribe", params={"clip_id": clip_id, **options})
    by_form = client.post("/api/transcribe", params={"clip_id": clip_id}, data=options)
    by_multipart = client.post("/api/transcribe", params={"clip_id": clip_id}, files={k: (None, v) for k, v in options.items()})
    assert by_query.status_code == by_form.status_code == by_multipart.status_code == 200, by_form.text
    assert by_query.text == by_form.text == by_multipart.text and not by_form.text.startswith("SPEAKER_")
