"""The voices API (/api/voices) and the voices / identify options of the transcription routes, on real
uvicorn servers on loopback with real clients.

- Refusals come before any model: a server with no models and a voice store filled in advance (key A
  at VOICES_MAX_PER_OWNER=3, key C with two voices, key B with none) answers every one of them.
- Enrolment and identification run the real models (the session's runner) on the committed fixtures:
  the reader enrolled from one_speaker.flac, JFK from his first turn of two_speakers.flac, then
  two_speakers.flac transcribed names every segment after the speaker of its reference turn.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_reference
from jobs_support import ThreadedServer, assert_error
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.api.identity import key_id
from shared.core.config import Settings
from shared.core.domain import Segment, Transcript
from shared.service.formats import to_rttm
from shared.voices.model import StoredVoice, Voice
from shared.voices.sqlite_store import SqliteVoiceStore

KEY_A = "voices-a-0123456789abcdefghij"  # Alice, Bob and Cleo: at the cap of 3
KEY_B = "voices-b-0123456789abcdefghij"  # no voices
KEY_C = "voices-c-0123456789abcdefghij"  # Carol and Dave
MISSING = "0" * 32


def stored(owner_key: str, name: str) -> StoredVoice:
    now = datetime.now(timezone.utc)
    vector = np.random.default_rng(len(name)).standard_normal(256).astype(np.float32)
    voice = Voice(voice_id=f"{len(name)}{name.encode().hex()}".ljust(32, "0"), name=name, created_at=now, updated_at=now,
                  speech_s=10.0, samples=1)  # fmt: skip
    return StoredVoice(voice, key_id(owner_key), vector / np.linalg.norm(vector))


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """No models; voices put in the store beforehand."""
    root = tmp_path_factory.mktemp("voices-bare")
    store = SqliteVoiceStore(root / "voices.sqlite3")
    voices = {v.voice.name: v for v in (stored(KEY_A, "Alice"), stored(KEY_A, "Bob"), stored(KEY_A, "Cleo"),
                                        stored(KEY_C, "Carol"), stored(KEY_C, "Dave"))}
    for v in voices.values():
        store.add(v)
    settings = Settings(_env_file=None, audio_storage_path=root, api_keys=f"{KEY_A},{KEY_B},{KEY_C}",
                        voices_max_per_owner=3)  # fmt: skip
    with ThreadedServer(create_app(settings, runner=NoModels(), voice_store=store)) as server:
        server.ids = {name: v.voice.voice_id for name, v in voices.items()}
        yield server
    store.close()


def as_key(server, key, timeout: float = 30):
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=timeout)


@pytest.fixture(scope="module")
def clip_b(bare):
    """A clip of key B's (uploads decode without models)."""
    with as_key(bare, KEY_B) as b, open(ONE_SPEAKER, "rb") as f:
        return b.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]


def test_list_get_rename(bare):
    with as_key(bare, KEY_A) as a:
        listed = a.get("/api/voices").json()["voices"]
        assert [v["name"] for v in listed] == ["Alice", "Bob", "Cleo"] and "vector" not in listed[0] and "owner" not in listed[0]
        alice = bare.ids["Alice"]
        assert a.get(f"/api/voices/{alice}").json() == listed[0]
        renamed = a.patch(f"/api/voices/{alice}", json={"name": "  Alice Smith "})
        assert renamed.status_code == 200 and renamed.json()["name"] == "Alice Smith"
        assert renamed.json()["updated_at"] > listed[0]["updated_at"]
        assert a.patch(f"/api/voices/{alice}", json={"name": "alice smith"}).json()["name"] == "alice smith"  # its own
        assert_error(a.patch(f"/api/voices/{alice}", json={"name": "BOB"}), 409, "voice_name_taken")
        assert_error(a.patch(f"/api/voices/{alice}", json={"name": "[x]"}), 422, "invalid_voice_name")
        assert_error(a.patch(f"/api/voices/{alice}", json={}), 422, "invalid_parameter")
        assert a.patch(f"/api/voices/{alice}", json={"name": "Alice"}).json()["name"] == "Alice"


def test_another_key_sees_none_of_them(bare):
    alice = bare.ids["Alice"]
    with as_key(bare, KEY_B) as b, as_key(bare, KEY_A) as a:
        assert b.get("/api/voices").json() == {"voices": []}
        for r in (b.get(f"/api/voices/{alice}"), b.patch(f"/api/voices/{alice}", json={"name": "Mine"}),
                  b.delete(f"/api/voices/{alice}"), b.get(f"/api/voices/{MISSING}")):  # fmt: skip
            assert assert_error(r, 404, "voice_not_found")["message"] in (f"no voice {alice}", f"no voice {MISSING}")
        assert a.get(f"/api/voices/{alice}").json()["name"] == "Alice"  # untouched


def test_delete(bare):
    dave = bare.ids["Dave"]
    with as_key(bare, KEY_C) as c:
        r = c.delete(f"/api/voices/{dave}")
        assert r.status_code == 204 and r.content == b""
        assert_error(c.get(f"/api/voices/{dave}"), 404, "voice_not_found")
        assert_error(c.delete(f"/api/voices/{dave}"), 404, "voice_not_found")
        assert [v["name"] for v in c.get("/api/voices").json()["voices"]] == ["Carol"]
    with as_key(bare, KEY_A) as a:  # a deleted voice names no one: asking for it is refused
        assert_error(a.post("/api/transcribe", params={"clip_id": _clip_of(a), "voices": dave}), 404, "voice_not_found")


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_a_malformed_voice_id_is_400(bare, method):
    with as_key(bare, KEY_A) as a:
        r = a.request(method.upper(), "/api/voices/not-a-voice", json={"name": "X"} if method == "patch" else None)
    assert_error(r, 400, "invalid_voice_id")


@pytest.mark.parametrize("name,code", [("", "invalid_voice_name"), ("  ", "invalid_voice_name"),
                                       ("<b>", "invalid_voice_name"), ("SPEAKER_01", "invalid_voice_name"),
                                       ("speaker_7", "invalid_voice_name"), ("x" * 65, "invalid_voice_name")])
def test_name_rules(bare, clip_b, name, code):
    with as_key(bare, KEY_B) as b:
        assert_error(b.post("/api/voices", data={"name": name, "clip_id": clip_b, "start": "0", "end": "5"}), 422, code)
        assert_error(b.post("/api/voices", files={"file": ("a.flac", b"x")}, data={"name": name}), 422, code)


def test_a_taken_name_and_the_cap(bare):
    with as_key(bare, KEY_A) as a, as_key(bare, KEY_C) as c:
        clip_a, clip_c = _clip_of(a), _clip_of(c)
        r = a.post("/api/voices", data={"name": "Zed", "clip_id": clip_a, "start": "0", "end": "5"})
        assert "VOICES_MAX_PER_OWNER" in assert_error(r, 409, "too_many_voices")["message"]
        with open(ONE_SPEAKER, "rb") as f:
            assert_error(a.post("/api/voices", data={"name": "Zed"}, files={"file": ("one.flac", f)}), 409, "too_many_voices")
        # names compare without case, and only among the key's own voices
        r = c.post("/api/voices", data={"name": "CAROL", "clip_id": clip_c, "start": "0", "end": "5"})
        assert bare.ids["Carol"] in assert_error(r, 409, "voice_name_taken")["message"]
        assert c.patch(f"/api/voices/{bare.ids['Carol']}", json={"name": "Alice"}).json()["name"] == "Alice"  # A's
        c.patch(f"/api/voices/{bare.ids['Carol']}", json={"name": "Carol"})
        assert [v["name"] for v in a.get("/api/voices").json()["voices"]] == ["Alice", "Bob", "Cleo"]
    assert not list((bare_storage(bare) / "incoming").glob("*"))  # the refused upload is not kept


@pytest.mark.parametrize(
    "data,files,status,code",
    [
        ({"name": "Eve"}, None, 422, "invalid_voice_sample"),  # no sample
        ({"name": "Eve", "clip_id": "{clip}", "start": "0"}, None, 422, "invalid_voice_sample"),  # no end
        ({"name": "Eve", "clip_id": "{clip}", "start": "0", "end": "5"}, [("file", ("a.flac", b"x"))], 422,
         "invalid_voice_sample"),  # two ways
        ({"name": "Eve", "clip_id": "{clip}", "start": "0", "end": "5", "samples": "[]"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "samples": "[]"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "samples": "{not json"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "samples": '[{"clip_id": "{clip}", "start": 0}]'}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "samples": json.dumps([{"clip_id": "{clip}", "start": 0, "end": 3}] * 21)}, None, 422,
         "invalid_voice_sample"),  # more than 20 samples
        ({"name": "Eve", "clip_id": "{clip}", "start": "0", "end": "999"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "clip_id": "{clip}", "start": "6", "end": "5"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "clip_id": "{clip}", "start": "-1", "end": "5"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "clip_id": "{clip}", "start": "nan", "end": "5"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve", "clip_id": "nope", "start": "0", "end": "5"}, None, 400, "invalid_clip_id"),
        ({"name": "Eve", "clip_id": MISSING, "start": "0", "end": "5"}, None, 404, "clip_not_found"),
        ({"name": "Eve", "colour": "red", "clip_id": "{clip}", "start": "0", "end": "5"}, None, 422, "invalid_parameter"),
        ({"name": "Eve", "file": "not a file"}, None, 422, "invalid_voice_sample"),
        ({"name": "Eve"}, [("file", ("a.flac", b""))], 400, "empty_file"),
        ({"name": "Eve"}, [("file", ("a.txt", b"not audio at all"))], 415, "unsupported_media"),
    ],
)
def test_bad_enrolments(bare, clip_b, data, files, status, code):
    data = {k: v.replace("{clip}", clip_b) for k, v in data.items()}
    with as_key(bare, KEY_B) as b:
        r = b.post("/api/voices", files=[(k, (None, v)) for k, v in data.items()] + (files or []))  # multipart
        assert_error(r, status, code)
        assert b.get("/api/voices").json() == {"voices": []}
    assert not list((bare_storage(bare) / "incoming").glob("*"))  # nothing staged stays behind


def bare_storage(server):
    return server.server.config.app.state.settings.audio_storage_path


def test_enrolment_needs_a_form_body(bare):
    with as_key(bare, KEY_B) as b:
        assert_error(b.post("/api/voices", json={"name": "Eve"}), 422, "invalid_parameter")


def test_another_keys_clip_is_not_found(bare, clip_b):
    with as_key(bare, KEY_C) as c:
        r = c.post("/api/voices", data={"name": "Thief", "clip_id": clip_b, "start": "0", "end": "5"})
        assert_error(r, 404, "clip_not_found")
        r = c.post("/api/voices", data={"name": "Thief", "samples": json.dumps([{"clip_id": clip_b, "start": 0, "end": 5}])})
        assert_error(r, 404, "clip_not_found")


@pytest.mark.parametrize("route", ["/api/transcribe", "/api/transcriptions", "/api/transcribe/stream"])
def test_transcription_voices_are_checked_before_any_work(bare, clip_b, route):
    alice = bare.ids["Alice"]
    with as_key(bare, KEY_B) as b, as_key(bare, KEY_A) as a:
        assert_error(b.post(route, params={"clip_id": clip_b, "voices": "not-a-voice"}), 400, "invalid_voice_id")
        assert_error(b.post(route, params={"clip_id": clip_b, "voices": MISSING}), 404, "voice_not_found")
        assert_error(b.post(route, params={"clip_id": clip_b, "voices": alice}), 404, "voice_not_found")  # A's
        assert_error(b.post(route, params={"clip_id": clip_b}, data={"voices": f" {MISSING} ,"}), 404, "voice_not_found")
        assert_error(b.post(route, params={"clip_id": clip_b, "voices": ",".join([MISSING] * 101)}), 422,
                     "invalid_parameter")  # fmt: skip
        assert_error(b.post(route, params={"clip_id": clip_b, "identify": "maybe"}), 422, "invalid_parameter")
        if route == "/api/transcriptions":
            with open(ONE_SPEAKER, "rb") as f:  # a job with an upload: refused before the upload is kept
                assert_error(b.post(route, params={"voices": alice}, files={"file": f}), 404, "voice_not_found")
        # A's own voice passes the check (the work then fails here: no models)
        ok = a.post("/api/transcriptions", params={"clip_id": _clip_of(a), "voices": alice})
        assert ok.status_code == 202, ok.text


def _clip_of(client) -> str:
    with open(ONE_SPEAKER, "rb") as f:
        return client.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]


def test_rttm_speaker_names_carry_no_spaces():
    t = Transcript(language="en", duration=3.0, speakers=["Mary Ann Smith"],
                   segments=[Segment(speaker="Mary Ann\tSmith", start=0.5, end=2.0, text="hi")])  # fmt: skip
    line = to_rttm(t).strip()
    assert line.split() == ["SPEAKER", "audio", "1", "0.500", "1.500", "<NA>", "<NA>", "Mary_Ann_Smith", "<NA>", "<NA>"]


def test_openapi_documents_the_voice_routes(bare):
    with as_key(bare, KEY_A) as a:
        spec = a.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/api/voices"]) == {"get", "post"} and set(paths["/api/voices/{voice_id}"]) == {"get", "patch", "delete"}
    enrol = paths["/api/voices"]["post"]
    body = enrol["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["name"] and {"file", "clip_id", "start", "end", "samples"} <= set(body["properties"])
    assert {"201", "404", "409", "415", "422"} <= set(enrol["responses"])
    assert enrol["tags"] == ["voices"]
    for name in ("voices", "identify"):
        for route in ("/api/transcribe", "/api/transcriptions", "/api/transcribe/stream"):
            assert name in {p["name"] for p in paths[route]["post"]["parameters"]}, (route, name)


# --- the real models ---
@pytest.fixture(scope="module")
def served(tmp_path_factory, runner):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("voices-real"),
                        api_keys=f"{KEY_A},{KEY_B}", job_wait_max_s=120)  # fmt: skip
    with ThreadedServer(create_app(settings, runner=runner)) as server:
        yield server


@pytest.fixture(scope="module")
def enrolled(served):
    """The reader enrolled by upload, JFK by a span of an uploaded clip (his first turn)."""
    with as_key(served, KEY_A, timeout=180) as a:
        with open(ONE_SPEAKER, "rb") as f:
            reader = a.post("/api/voices", data={"name": "Reader"}, files={"file": ("one.flac", f)})
        assert reader.status_code == 201, reader.text
        with open(TWO_SPEAKERS, "rb") as f:
            clip = a.post("/api/audio", files={"file": ("two.flac", f)}).json()["clip_id"]
        jfk = a.post("/api/voices", data={"name": "JFK", "clip_id": clip, "start": "7.8", "end": "11.95"})
        assert jfk.status_code == 201, jfk.text
    return {"clip": clip, "Reader": reader.json(), "JFK": jfk.json()}


NAMES = {"librivox_reader": "Reader", "jfk": "JFK"}


def reference_speaker(start: float, end: float) -> str:
    """The reference turn that overlaps [start, end] most."""
    turns = load_reference(TWO_SPEAKERS)["turns"]
    best = max(turns, key=lambda t: min(end, t["end"]) - max(start, t["start"]))
    return NAMES[best["speaker"]]


@pytest.mark.slow
def test_enrolled_voices_are_what_was_sent(enrolled):
    reader, jfk = enrolled["Reader"], enrolled["JFK"]
    assert reader["samples"] == 1 and reader["speech_s"] == pytest.approx(20, abs=3)
    assert jfk["samples"] == 1 and jfk["speech_s"] == pytest.approx(3.6, abs=0.8)


@pytest.mark.slow
def test_enrol_from_spans_of_two_clips_then_delete(served, enrolled):
    with as_key(served, KEY_A, timeout=180) as a:
        with open(ONE_SPEAKER, "rb") as f:
            one = a.post("/api/audio", files={"file": ("one.flac", f)}).json()["clip_id"]
        spans = [{"clip_id": enrolled["clip"], "start": 0.3, "end": 7.0}, {"clip_id": one, "start": 0.0, "end": 6.0},
                 {"clip_id": enrolled["clip"], "start": 12.65, "end": 15.39}]  # fmt: skip
        r = a.post("/api/voices", files=[("name", (None, "Narrator")), ("samples", (None, json.dumps(spans)))])
        assert r.status_code == 201, r.text
        narrator = r.json()
        try:
            assert narrator["samples"] == 2 and narrator["speech_s"] == pytest.approx(14, abs=3)  # two clips
            assert narrator["voice_id"] in {v["voice_id"] for v in a.get("/api/voices").json()["voices"]}
        finally:
            assert a.delete(f"/api/voices/{narrator['voice_id']}").status_code == 204
        assert_error(a.get(f"/api/voices/{narrator['voice_id']}"), 404, "voice_not_found")
        assert {v["name"] for v in a.get("/api/voices").json()["voices"]} == {"Reader", "JFK"}


@pytest.mark.slow
@pytest.mark.parametrize("start,end,code", [(7.8, 9.3, "too_little_speech"), (0.0, 14.0, "several_voices")])
def test_samples_that_cannot_make_a_voice(served, enrolled, start, end, code):
    with as_key(served, KEY_A, timeout=180) as a:
        r = a.post("/api/voices", data={"name": "Nobody", "clip_id": enrolled["clip"], "start": str(start), "end": str(end)})
        assert_error(r, 422, code)
        assert {v["name"] for v in a.get("/api/voices").json()["voices"]} == {"Reader", "JFK"}


def assert_named(segments, enrolled, only=None):
    assert segments
    for seg in segments:
        expected = reference_speaker(seg["start"], seg["end"])
        if only is None or expected in only:
            assert seg["speaker"] == expected, seg
            assert seg["speaker_id"] == enrolled[expected]["voice_id"], seg
            assert 0.75 < seg["speaker_confidence"] <= 1.0, seg
        else:
            assert seg["speaker"].startswith("SPEAKER_") and seg["speaker_id"] is None, seg
            assert seg["speaker_confidence"] is None, seg


@pytest.mark.slow
def test_transcribe_with_identify_names_every_speaker(served, enrolled):
    with as_key(served, KEY_A, timeout=180) as a:
        r = a.post("/api/transcribe", params={"clip_id": enrolled["clip"], "identify": True})
        assert r.status_code == 200, r.text
        transcript = r.json()
        assert_named(transcript["segments"], enrolled)
        assert set(transcript["speakers"]) == {"Reader", "JFK"}
        vtt = a.post("/api/transcribe", params={"clip_id": enrolled["clip"]},
                     data={"identify": "true", "format": "vtt"}).text  # fmt: skip
        assert "<v JFK>" in vtt and "<v Reader>" in vtt and "SPEAKER_" not in vtt


@pytest.mark.slow
def test_every_format_carries_a_renamed_voice(served, enrolled):
    reader = enrolled["Reader"]["voice_id"]
    with as_key(served, KEY_A, timeout=180) as a:
        assert a.patch(f"/api/voices/{reader}", json={"name": "Miss Reader"}).status_code == 200
        try:
            def fmt(name):
                return a.post("/api/transcribe", params={"clip_id": enrolled["clip"], "voices": reader, "format": name}).text

            assert "[Miss Reader]" in fmt("srt") and "\nMiss Reader: " in "\n" + fmt("txt")
            rttm = [line.split() for line in fmt("rttm").splitlines()]
            assert all(len(fields) == 10 for fields in rttm)
            speakers = {fields[7] for fields in rttm}
            assert "Miss_Reader" in speakers and len(speakers) == 2 and any(s.startswith("SPEAKER_") for s in speakers)
        finally:
            a.patch(f"/api/voices/{reader}", json={"name": "Reader"})


@pytest.mark.slow
def test_a_job_names_the_voices_it_asked_for(served, enrolled):
    jfk = enrolled["JFK"]["voice_id"]
    with as_key(served, KEY_A, timeout=180) as a:
        r = a.post("/api/transcriptions", params={"clip_id": enrolled["clip"], "wait": True}, data={"voices": jfk})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "succeeded" and job["options"]["voices"] == [jfk]
        assert_named(job["result"]["segments"], enrolled, only={"JFK"})


@pytest.mark.slow
def test_the_stream_names_speakers(served, enrolled):
    with as_key(served, KEY_A, timeout=180) as a:
        with a.stream("POST", "/api/transcribe/stream", params={"clip_id": enrolled["clip"], "identify": True}) as r:
            assert r.status_code == 200
            events = [json.loads(line) for line in r.iter_lines() if line]
    segments = [e for e in events if e["type"] == "segment"]
    assert events[-1]["type"] == "done" and set(events[-1]["speakers"]) == {"Reader", "JFK"}
    assert_named(segments, enrolled)
