"""The browser page in real headless Chromium (Debian's chromium + chromium-driver) against real servers
on loopback: it loads from its own origin only with a clean console, is usable by keyboard, shows the
API's errors, asks for a key when the server needs one, and transcribes a fixture end to end (speaker
lines, player sync, renaming, downloads rendered by the server with the new names)."""

from __future__ import annotations

import base64
import json

import pytest
import srt
import webvtt
from audio_fixtures import TWO_SPEAKERS, normalize_words
from browser_support import (
    browser,
    console_errors,
    foreign,
    requested_urls,
    wait_for_download,
    wait_until,
)
from jobs_support import API_KEY, ThreadedServer, keyed_server
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.core.config import Settings

pytestmark = pytest.mark.timeout(300)

PAGE_KEY = "page-key-0123456789"  # API keys have at least 16 characters
CONTROLS = ["file", "diarize", "num-speakers", "language", "word-timestamps", "submit", "live-toggle"]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """No keys, no models: a job's stages fail, which is what the error tests need."""
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("browser-open"))
    with ThreadedServer(create_app(settings, runner=NoModels())) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server_no_models(tmp_path_factory):
    settings = Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("browser-keyed"), api_keys=PAGE_KEY)
    with ThreadedServer(create_app(settings, runner=NoModels())) as server:
        yield server


def load(driver, url: str) -> None:
    driver.get(url + "/")
    wait_until(lambda: driver.execute_script("return document.body.dataset.ready === 'true'"), 20, "the page to start")


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def alert_text(driver) -> str:
    box = by_id(driver, "error")
    return box.text if box.is_displayed() else ""


def assert_clean(driver, origin: str, answered: tuple[int, ...] = ()) -> None:
    """No console errors (but the browser's own note of each error status the test provoked), and no
    request that left the origin."""
    provoked = [f"status of {status} " for status in answered]
    errors = [e for e in console_errors(driver)
              if not (e["source"] == "network" and any(p in e["message"] for p in provoked))]
    assert errors == []
    urls = requested_urls(driver)
    assert any(u.endswith("/static/app.js") for u in urls), urls  # the log did record the page's requests
    assert foreign(urls, origin) == []


def drop_file(driver, name: str, data: bytes, mime: str) -> None:
    """What a drag-and-drop delivers: a drop event whose DataTransfer holds the file."""
    driver.execute_script(
        """const [name, b64, mime] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: mime }));
        const zone = document.getElementById("dropzone");
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));""",
        name, base64.b64encode(data).decode(), mime,
    )  # fmt: skip


def test_the_page_loads_from_its_origin_only_and_works_by_keyboard(open_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with browser() as driver:
        load(driver, open_server.url)
        assert driver.title.startswith("whospoke")
        assert not by_id(driver, "key-section").is_displayed()  # this server needs no key
        languages = [o.get_attribute("value") for o in by_id(driver, "language").find_elements("tag name", "option")]
        assert languages == ["", "en"]  # detect, or what the English-only model knows
        # every control a person can reach has a name a screen reader reads out
        controls = driver.find_elements("css selector", "input, select, button")
        unnamed = [c.get_attribute("id") or c.get_attribute("outerHTML")[:80]
                   for c in controls if c.is_displayed() and not c.accessible_name.strip()]
        assert unnamed == []
        assert by_id(driver, "file").accessible_name  # hidden behind the drop zone, still named
        # Tab walks through the upload form, the file picker included, and on to live mode's button
        by_id(driver, "upload-title").click()
        reached = []
        while CONTROLS[-1] not in reached and len(reached) < 20:  # keys to the page, as a person types
            ActionChains(driver).send_keys(Keys.TAB).perform()
            reached.append(driver.switch_to.active_element.get_attribute("id"))
        assert [c for c in reached if c in CONTROLS] == CONTROLS, reached
        assert_clean(driver, open_server.url)


def test_api_errors_are_shown_as_the_apis_message(open_server, tmp_path):
    notes = b"minutes of the meeting, not audio\n" * 20
    with open_server.client() as client:  # what the API itself says about this file
        expected = client.post("/api/transcriptions", files={"file": ("notes.txt", notes, "text/plain")}).json()["error"]
    assert expected["code"] == "unsupported_media"
    with browser() as driver:
        load(driver, open_server.url)
        by_id(driver, "submit").click()  # nothing chosen yet
        assert "choose an audio file" in wait_until(lambda: alert_text(driver), 10, "an error")
        drop_file(driver, "notes.txt", notes, "text/plain")
        assert "notes.txt" in by_id(driver, "file-name").text
        assert driver.execute_script("return document.getElementById('file').files[0].name") == "notes.txt"
        by_id(driver, "submit").click()
        shown = wait_until(lambda: "unsupported_media" in alert_text(driver) and alert_text(driver), 30, "the 415")
        assert expected["message"] in shown and "HTTP 415" in shown
        # a job that fails on the server (no models here) says why, in the job's own words
        (tmp_path / "tone.wav").write_bytes(_tone_wav())
        by_id(driver, "file").send_keys(str(tmp_path / "tone.wav"))
        by_id(driver, "submit").click()
        shown = wait_until(lambda: "unsupported_media" not in alert_text(driver) and alert_text(driver), 60, "the failure")
        job_id = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                       ".filter(n => n.includes('/api/jobs/')).pop().split('/api/jobs/')[1]")
        with open_server.client() as client:
            error = client.get(f"/api/jobs/{job_id}").json()["error"]
        assert error["message"] in shown and error["code"] in shown
        assert by_id(driver, "progress-text").text == "Failed."
        assert_clean(driver, open_server.url, answered=(415,))


def _tone_wav() -> bytes:
    import io
    import wave

    import numpy as np

    samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def test_a_server_with_keys_gets_its_key_from_the_field(keyed_server_no_models, tmp_path):
    server = keyed_server_no_models
    (tmp_path / "tone.wav").write_bytes(_tone_wav())
    with browser() as driver:
        load(driver, server.url)
        assert by_id(driver, "key-section").is_displayed()
        by_id(driver, "file").send_keys(str(tmp_path / "tone.wav"))
        by_id(driver, "submit").click()
        shown = wait_until(lambda: alert_text(driver), 20, "the 401")
        assert "an API key is required" in shown and "unauthorized" in shown
        assert driver.switch_to.active_element.get_attribute("id") == "api-key"
        by_id(driver, "api-key").send_keys(PAGE_KEY)
        by_id(driver, "key-form").find_element("css selector", "button[type=submit]").click()
        assert driver.execute_script("return sessionStorage.getItem('whospoke.apiKey')") == PAGE_KEY
        assert driver.execute_script("return localStorage.length") == 0  # never kept beyond the tab
        by_id(driver, "submit").click()
        # the key went through: the job was accepted and ran (and failed, as it has no models)
        wait_until(lambda: by_id(driver, "progress-text").text == "Failed.", 60, "the job to end")
        assert "unauthorized" not in alert_text(driver)
        # a reload in the same tab keeps it; another browser session does not have it
        load(driver, server.url)
        assert by_id(driver, "api-key").get_attribute("value") == PAGE_KEY
        assert_clean(driver, server.url, answered=(401,))
    with browser() as other:
        load(other, server.url)
        assert by_id(other, "api-key").get_attribute("value") == ""


def lines(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#transcript .line')].map((li) => ({
            start: Number(li.dataset.start), speaker: li.querySelector('.speaker')?.dataset.speaker,
            name: li.querySelector('.speaker')?.textContent, text: li.querySelector('.text').textContent,
            current: li.classList.contains('current')}))""")  # fmt: skip


def player(driver, what: str):
    return driver.execute_script(f"return document.getElementById('player').{what}")


def line_with(rows: list[dict], words: str) -> dict:
    wanted = " ".join(normalize_words(words))
    found = [r for r in rows if wanted in " ".join(normalize_words(r["text"]))]
    assert found, (words, [r["text"] for r in rows])
    return found[0]


@pytest.mark.slow
def test_transcribe_a_fixture_rename_a_speaker_and_download(tmp_path):
    from selenium.webdriver.common.keys import Keys

    server = keyed_server()  # real models, API keys on
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with browser(downloads) as driver:
        load(driver, server.url)
        by_id(driver, "api-key").send_keys(API_KEY)
        by_id(driver, "key-form").find_element("css selector", "button[type=submit]").click()
        by_id(driver, "file").send_keys(str(TWO_SPEAKERS))
        by_id(driver, "num-speakers").send_keys("2")
        by_id(driver, "submit").click()
        wait_until(lambda: lines(driver) or alert_text(driver), 240, "the transcript")
        assert alert_text(driver) == ""
        assert by_id(driver, "progress-text").text == "Done."
        assert float(by_id(driver, "progress").get_attribute("value")) == 1.0

        rows = lines(driver)
        reader, jfk = line_with(rows, "John Dashwood"), line_with(rows, "fellow Americans")
        assert line_with(rows, "what you can do for your country")["speaker"] == jfk["speaker"]
        assert line_with(rows, "young man")["speaker"] == reader["speaker"]
        assert reader["speaker"] != jfk["speaker"] and all(r["speaker"] for r in rows)
        assert [r["start"] for r in rows] == sorted(r["start"] for r in rows)

        # rename JFK's speaker: every one of his lines follows, the reader's do not
        field = driver.find_element("css selector", f"#speaker-list input[data-speaker='{jfk['speaker']}']")
        field.clear()
        field.send_keys("John F. Kennedy")
        rows = lines(driver)
        assert {r["name"] for r in rows if r["speaker"] == jfk["speaker"]} == {"John F. Kennedy"}
        assert {r["name"] for r in rows if r["speaker"] == reader["speaker"]} == {reader["speaker"]}

        # the player plays the chosen file: a click on a line seeks there and highlights it
        wait_until(lambda: player(driver, "duration") > 27, 20, "the audio to load")
        target = next(i for i, r in enumerate(rows) if r["speaker"] == jfk["speaker"])
        driver.find_elements("css selector", "#transcript .line")[target].click()
        assert player(driver, "currentTime") >= rows[target]["start"]
        assert [i for i, r in enumerate(lines(driver)) if r["current"]] == [target]
        # ... the keyboard does the same through the line's time button
        last = len(rows) - 1
        driver.find_elements("css selector", "#transcript .line .time")[last].send_keys(Keys.ENTER)
        wait_until(lambda: [i for i, r in enumerate(lines(driver)) if r["current"]] == [last], 5, "the last line")
        # ... and as the audio plays on, the highlight follows it
        driver.execute_script("const p = document.getElementById('player'); p.pause(); p.currentTime = arguments[0];",
                              rows[1]["start"] + 0.2)
        wait_until(lambda: [i for i, r in enumerate(lines(driver)) if r["current"]] == [1], 5, "line 1 highlighted")

        # downloads come from the server's renderer, with the new name
        by_id(driver, "downloads-panel").find_element("css selector", "button[data-format=srt]").click()
        subtitles = list(srt.parse(wait_for_download(downloads, ".srt").read_text()))
        assert len(subtitles) == len(rows)
        for cue, row in zip(subtitles, rows, strict=True):
            name = "John F. Kennedy" if row["speaker"] == jfk["speaker"] else reader["speaker"]
            assert cue.content == f"[{name}] {row['text']}"
        by_id(driver, "downloads-panel").find_element("css selector", "button[data-format=vtt]").click()
        voices = [c.voice for c in webvtt.read(str(wait_for_download(downloads, ".vtt")))]
        assert voices.count("John F. Kennedy") == sum(r["speaker"] == jfk["speaker"] for r in rows)
        by_id(driver, "downloads-panel").find_element("css selector", "button[data-format=json]").click()
        data = json.loads(wait_for_download(downloads, ".json").read_text())
        assert set(data["speakers"]) == {"John F. Kennedy", reader["speaker"]}
        assert wait_for_download(downloads, ".srt").name == "two_speakers.srt"
        assert_clean(driver, server.url)
