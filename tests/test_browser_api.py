"""What the browser page needs from the server, over real HTTP (no browser, no models): `/` and its
assets, `/web/config`, and the result route's `speaker_names` that the page's downloads use."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import srt
import webvtt
from jobs_support import ThreadedServer, assert_error
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.api.web import STATIC_DIR
from shared.core.config import Settings
from shared.core.domain import Segment, TranscribeOptions, Transcript, Word
from shared.jobs.model import Job, JobStatus, new_job_id
from shared.jobs.manager import JOBS_DB
from shared.jobs.sqlite_store import SqliteJobStore

TRANSCRIPT = Transcript(
    language="en",
    duration=9.0,
    speakers=["SPEAKER_00", "SPEAKER_01"],
    segments=[
        Segment(speaker="SPEAKER_00", start=0.5, end=2.5, text="Good morning.",
                words=[Word(start=0.5, end=1.2, word=" Good", speaker="SPEAKER_00"),
                       Word(start=1.3, end=2.5, word=" morning.", speaker="SPEAKER_00")]),
        Segment(speaker="SPEAKER_01", start=3.0, end=5.0, text="Hello there.",
                words=[Word(start=3.0, end=3.6, word=" Hello", speaker="SPEAKER_01"),
                       Word(start=3.7, end=5.0, word=" there.", speaker="SPEAKER_01")]),
        Segment(speaker="SPEAKER_00", start=6.0, end=8.5, text="Shall we start?",
                words=[Word(start=6.0, end=8.5, word=" Shall we start?", speaker="SPEAKER_00")]),
    ],
)  # fmt: skip


def finished_job(store: SqliteJobStore, transcript: Transcript) -> str:
    """A job that ran and succeeded, written through the store's own transitions."""
    job = store.create(Job(job_id=new_job_id(), status=JobStatus.queued, clip_id="0" * 32,
                           options=TranscribeOptions(word_timestamps=True), created_at=datetime.now(timezone.utc)))
    assert store.claim_next().job_id == job.job_id
    assert store.finish(job.job_id, transcript)
    return job.job_id


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    storage = tmp_path_factory.mktemp("browser-api")
    store = SqliteJobStore(storage / JOBS_DB)
    job_id = finished_job(store, TRANSCRIPT)
    plain_id = finished_job(store, TRANSCRIPT.model_copy(update={"speakers": [], "segments": [
        s.model_copy(update={"speaker": None, "words": None}) for s in TRANSCRIPT.segments]}))
    settings = Settings(_env_file=None, audio_storage_path=storage)
    with ThreadedServer(create_app(settings, runner=NoModels(), job_store=store)) as server, server.client() as client:
        yield client, job_id, plain_id


def test_the_page_and_its_assets_are_served_without_a_key(tmp_path):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys="k1-0123456789abcdef")
    with ThreadedServer(create_app(settings, runner=NoModels())) as server, server.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "media-src 'self' blob:" in csp
        assert client.head("/").status_code == 200
        assets = [("app.js", "javascript"), ("pcm-worklet.js", "javascript"), ("style.css", "text/css"),
                  ("favicon.svg", "image/svg+xml")]  # a worklet module loads only as JavaScript
        for name, media in assets:
            r = client.get(f"/static/{name}")
            assert r.status_code == 200 and media in r.headers["content-type"], (name, r.headers)
            assert r.content == (STATIC_DIR / name).read_bytes()
        assert_error(client.get("/static/no-such.js"), 404, "not_found")
        assert client.get("/web/config").json()["api_keys_required"] is True
        assert client.get("/api/jobs/" + "0" * 32).status_code == 401  # the API itself still needs the key


def test_every_asset_the_page_names_exists():
    import re

    html = (STATIC_DIR / "index.html").read_text()
    named = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    for module in STATIC_DIR.glob("*.js"):
        named |= {f"/static/{m}" for m in re.findall(r'from "\./([^"]+)"', module.read_text())}
        named |= set(re.findall(r'addModule\("(/static/[^"]+)"\)', module.read_text()))
    assert {"/static/app.js", "/static/style.css", "/static/transcript.js", "/static/pcm-worklet.js"} <= named
    assert all((STATIC_DIR / n.removeprefix("/static/")).is_file() for n in named), named
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # nothing from another origin


def test_config_and_page_are_not_in_the_openapi_document(site):
    client, _, _ = site
    config = client.get("/web/config").json()
    assert config["api_keys_required"] is False
    assert config["languages"] == ["en"]  # the bundled tiny.en is English-only
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/web/config" not in paths and not any(p.startswith("/static") for p in paths)
    assert any(p["name"] == "speaker_names" for p in paths["/api/jobs/{job_id}/result"]["get"]["parameters"])


def result(client, job_id, fmt, names=None):
    params = {"format": fmt}
    if names is not None:
        params["speaker_names"] = names if isinstance(names, str) else json.dumps(names)
    return client.get(f"/api/jobs/{job_id}/result", params=params)


NAMES = {"SPEAKER_00": "Ada Lovelace", "SPEAKER_01": "Zoë"}


def test_speaker_names_relabel_every_format(site, tmp_path):
    client, job_id, _ = site
    subtitles = list(srt.parse(result(client, job_id, "srt", NAMES).text))
    assert [s.content for s in subtitles] == ["[Ada Lovelace] Good morning.", "[Zoë] Hello there.",
                                              "[Ada Lovelace] Shall we start?"]
    (tmp_path / "t.vtt").write_text(result(client, job_id, "vtt", NAMES).text)
    assert [c.voice for c in webvtt.read(str(tmp_path / "t.vtt"))] == ["Ada Lovelace", "Zoë", "Ada Lovelace"]
    assert result(client, job_id, "txt", NAMES).text.splitlines() == [
        "Ada Lovelace: Good morning.", "Zoë: Hello there.", "Ada Lovelace: Shall we start?"]
    data = result(client, job_id, "json", NAMES).json()
    assert data["speakers"] == ["Ada Lovelace", "Zoë"]
    assert [s["speaker"] for s in data["segments"]] == ["Ada Lovelace", "Zoë", "Ada Lovelace"]
    assert {w["speaker"] for w in data["segments"][1]["words"]} == {"Zoë"}
    # one speaker renamed, the other keeps its label; two given one name become one speaker
    assert result(client, job_id, "txt", {"SPEAKER_01": "Bob"}).text.splitlines()[:2] == [
        "SPEAKER_00: Good morning.", "Bob: Hello there."]
    assert result(client, job_id, "json", {"SPEAKER_00": "Al", "SPEAKER_01": "Al"}).json()["speakers"] == ["Al"]
    rttm = result(client, job_id, "rttm", {"SPEAKER_01": "Bob"}).text.splitlines()
    assert [line.split()[7] for line in rttm] == ["SPEAKER_00", "Bob", "SPEAKER_00"]
    # the stored job is untouched, and no names (or {}) is the plain result
    assert result(client, job_id, "txt", {}).text == result(client, job_id, "txt").text
    assert client.get(f"/api/jobs/{job_id}").json()["result"]["speakers"] == ["SPEAKER_00", "SPEAKER_01"]


@pytest.mark.parametrize(
    "fmt,names,says",
    [
        ("srt", "{not json", "not JSON"),
        ("srt", '["SPEAKER_00", "Ada"]', "JSON object"),
        ("srt", '{"SPEAKER_00": 7}', "JSON object"),
        ("srt", {"SPEAKER_07": "Ada"}, "no speaker 'SPEAKER_07'"),
        ("srt", {"SPEAKER_00": "   "}, "1-64 printable"),
        ("srt", {"SPEAKER_00": "x" * 65}, "1-64 printable"),
        ("vtt", {"SPEAKER_00": "<b>Ada</b>"}, "without"),
        ("srt", {"SPEAKER_00": "Ada]"}, "without"),
        ("txt", {"SPEAKER_00": "Ada\nSPEAKER_01: forged line"}, "printable"),
        ("rttm", {"SPEAKER_00": "Ada Lovelace"}, "cannot contain spaces"),
    ],
)
def test_bad_speaker_names_are_refused(site, fmt, names, says):
    client, job_id, _ = site
    error = assert_error(result(client, job_id, fmt, names), 422, "invalid_speaker_names")
    assert says in error["message"], error


def test_speaker_names_on_a_transcript_without_speakers(site):
    client, _, plain_id = site
    error = assert_error(result(client, plain_id, "txt", {"SPEAKER_00": "Ada"}), 422, "invalid_speaker_names")
    assert "not diarized" in error["message"]


def test_an_overlong_speaker_names_is_refused_before_parsing(site):
    client, job_id, _ = site
    assert_error(result(client, job_id, "txt", "{" + " " * 5000 + "}"), 422, "invalid_parameter")
