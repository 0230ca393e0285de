"""Live mode of the browser page in real headless Chromium, its microphone Chromium's fake capture device
playing the two-speaker fixture, against a real server with the real models: grey partial words, then
coloured speaker lines with the expected words, Stop waiting for `done`; and a dropped WebSocket that the
page resumes with no line lost or shown twice. Without models: tentative words and speaker corrections
drawn from events fed to the page."""

from __future__ import annotations

import asyncio
import json
import wave

import numpy as np
import pytest
import websockets
from audio_fixtures import SAMPLE_RATE, TWO_SPEAKERS, load_audio, normalize_words
from browser_support import browser, fake_microphone, requested_urls, wait_until
from jobs_support import API_KEY, ThreadedServer, keyed_server
from test_browser import alert_text, assert_clean, by_id, line_with, lines, load
from test_jobs_api import NoModels

from shared.api.app import create_app
from shared.core.config import Settings

pytestmark = pytest.mark.timeout(300)

SILENCE_S = 4.0  # after the last turn, so its utterance closes before Chromium loops the file
EXPECTED = ["dashwood", "americans", "country"]  # a word of the first, second and fourth turns


def microphone_wav(tmp_path) -> str:
    """The fixture as Chromium's fake capture wants it: 16-bit PCM wav, with silence at the end."""
    samples = np.concatenate([load_audio(TWO_SPEAKERS), np.zeros(int(SILENCE_S * SAMPLE_RATE), np.float32)])
    path = tmp_path / "microphone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return str(path)


def live_state(driver) -> str:
    return by_id(driver, "live-section").get_attribute("data-state")


def pending(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#live-pending .line')].map((li) => ({
            utterance: li.dataset.utterance, text: li.querySelector('.text').textContent,
            colour: getComputedStyle(li.querySelector('.text')).color}))""")  # fmt: skip


def final_utterances(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#transcript .line')].map((li) => li.dataset.utterance)")


def said(rows: list[dict]) -> list[str]:
    return [w for r in rows for w in normalize_words(r["text"])]


def start_live(driver, server) -> None:
    load(driver, server.url)
    by_id(driver, "api-key").send_keys(API_KEY)
    by_id(driver, "key-form").find_element("css selector", "button[type=submit]").click()
    by_id(driver, "num-speakers").send_keys("2")
    by_id(driver, "live-toggle").click()
    wait_until(lambda: live_state(driver) == "live" or alert_text(driver), 30, "the stream to open")
    assert alert_text(driver) == ""


def watch(driver, until, timeout: float, seen: list[dict]) -> None:
    """Poll the page until `until(rows)` holds, recording every grey pending line seen on the way."""

    def check():
        assert alert_text(driver) == "", alert_text(driver)
        seen.extend(p for p in pending(driver) if p["text"].strip())
        return until(lines(driver))

    wait_until(check, timeout, "the expected final lines", interval=0.2)


def stop_live(driver) -> None:
    button = by_id(driver, "live-toggle")
    assert button.text == "Stop"
    button.click()
    wait_until(lambda: live_state(driver) in ("ended", "failed"), 150, "the stream to end")
    assert live_state(driver) == "ended" and alert_text(driver) == ""
    assert by_id(driver, "live-toggle").text == "Start live"
    assert pending(driver) == []


def has_expected(rows: list[dict]) -> bool:
    words = said(rows)
    return all(w in words for w in EXPECTED)


def first_message(url: str) -> dict:
    async def read() -> dict:
        async with websockets.connect(url) as ws:
            return json.loads(await ws.recv())

    return asyncio.run(read())


def test_live_mode_shows_the_apis_error_and_asks_for_a_missing_key(tmp_path):
    open_settings = Settings(_env_file=None, audio_storage_path=tmp_path / "open")
    keyed_settings = Settings(_env_file=None, audio_storage_path=tmp_path / "keyed", api_keys="page-key-0123456789")
    flags = fake_microphone(microphone_wav(tmp_path))
    with ThreadedServer(create_app(open_settings, runner=NoModels())) as server, browser(flags=flags) as driver:
        # what the server itself answers a stream asking for 40 speakers
        ws = server.url.replace("http://", "ws://") + "/ws/stream"
        expected = first_message(f"{ws}?format=pcm16&rate=16000&num_speakers=40")
        assert expected["type"] == "error" and expected["code"] == "invalid_option"
        load(driver, server.url)
        by_id(driver, "num-speakers").send_keys("40")
        by_id(driver, "live-toggle").click()
        shown = wait_until(lambda: alert_text(driver), 20, "the error")
        assert expected["message"] in shown and "invalid_option" in shown
        wait_until(lambda: live_state(driver) == "failed", 10, "live mode to stop")
        assert by_id(driver, "live-toggle").text == "Start live" and by_id(driver, "submit").is_enabled()
        assert_clean(driver, server.url)
    with ThreadedServer(create_app(keyed_settings, runner=NoModels())) as server, browser(flags=flags) as driver:
        load(driver, server.url)
        by_id(driver, "live-toggle").click()
        shown = wait_until(lambda: alert_text(driver), 10, "the error")
        assert "API key" in shown and "unauthorized" in shown
        assert driver.switch_to.active_element.get_attribute("id") == "api-key"
        assert not any("/ws/stream" in u for u in requested_urls(driver))  # it did not try without one
        assert_clean(driver, server.url)


def word(text: str, start: float) -> dict:
    return {"word": text, "start": start, "end": start + 0.3, "probability": 0.9}


def pending_parts(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#live-pending .line')].map((li) => {
            const stable = li.querySelector('.stable'), tentative = li.querySelector('.tentative');
            return {utterance: li.dataset.utterance, stable: stable.textContent, tentative: tentative.textContent,
                    stableStyle: getComputedStyle(stable).fontStyle + ' ' + getComputedStyle(stable).color,
                    tentativeStyle: getComputedStyle(tentative).fontStyle + ' ' + getComputedStyle(tentative).color};
        })""")  # fmt: skip


def replay(driver, *events: dict) -> None:
    driver.execute_script("window.__whospokeLive.replayForTest(arguments[0])", list(events))


def test_tentative_words_and_speaker_updates_are_drawn(tmp_path):
    """The page's drawing of /ws/stream events, fed to it directly (no microphone, no models): tentative
    words after the stable ones, distinct, replaced by each partial and gone with the final; a
    speaker_update relabels the final lines it names."""
    settings = Settings(_env_file=None, audio_storage_path=tmp_path / "page")
    with ThreadedServer(create_app(settings, runner=NoModels())) as server, browser() as driver:
        load(driver, server.url)
        replay(driver, {"type": "speech_started", "seq": 1, "utterance": 0, "start": 0.0},
               {"type": "partial", "seq": 2, "utterance": 0, "text": "", "words": [],
                "tentative": " Mr. Jon", "tentative_words": [word(" Mr.", 0.0), word(" Jon", 0.4)]})
        (line,) = pending_parts(driver)
        assert (line["stable"], line["tentative"]) == ("", "Mr. Jon")
        replay(driver, {"type": "partial", "seq": 3, "utterance": 0, "text": " Mr.", "words": [word(" Mr.", 0.0)],
                        "tentative": " John Dashwood", "tentative_words": [word(" John", 0.4), word(" Dashwood", 0.8)]})
        (line,) = pending_parts(driver)
        assert (line["stable"], line["tentative"]) == ("Mr.", " John Dashwood")  # replaced, not added to
        assert line["tentativeStyle"].startswith("italic") and line["tentativeStyle"] != line["stableStyle"]
        replay(driver, {"type": "partial", "seq": 4, "utterance": 0, "text": " John", "words": [word(" John", 0.4)],
                        "tentative": "", "tentative_words": []})
        assert [(p["stable"], p["tentative"]) for p in pending_parts(driver)] == [("Mr. John", "")]

        def final(seq: int, utterance: int, speaker: str, text: str) -> dict:
            return {"type": "final", "seq": seq, "utterance": utterance, "start": 2.0 * utterance,
                    "end": 2.0 * utterance + 1.5, "speaker": speaker, "speaker_id": None, "speaker_confidence": None,
                    "text": text, "language": "en", "words": []}

        replay(driver, final(5, 0, "SPEAKER_00", "Mr. John Dashwood had then leisure."),
               {"type": "speech_started", "seq": 6, "utterance": 1, "start": 2.0},
               {"type": "partial", "seq": 7, "utterance": 1, "text": "", "words": [],
                "tentative": " And so", "tentative_words": [word(" And", 2.0), word(" so", 2.3)]},
               final(8, 1, "SPEAKER_01", "And so am I."), final(9, 2, "SPEAKER_00", "He was not."))
        assert pending_parts(driver) == []  # the finals took the pending lines, tentative words included
        assert [r["speaker"] for r in lines(driver)] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]

        # utterance 1 was the first voice after all: relabelled, and SPEAKER_01 leaves the speaker panel
        replay(driver, {"type": "speaker_update", "seq": 10, "utterances": [1], "speaker": "SPEAKER_00",
                        "previous": "SPEAKER_01", "speaker_id": None, "speaker_confidence": None})
        rows = lines(driver)
        assert [(r["speaker"], r["name"]) for r in rows] == [("SPEAKER_00", "SPEAKER_00")] * 3
        assert rows[1]["text"] == "And so am I."  # the text never changes
        panel = driver.execute_script(
            """return [...document.querySelectorAll('#speaker-list .speaker-item')].filter((li) => !li.hidden)
                .map((li) => li.querySelector('input').dataset.speaker)""")  # fmt: skip
        assert panel == ["SPEAKER_00"]
        # a speaker named after a remembered voice: the name, and the match's confidence as a tooltip
        replay(driver, {"type": "speaker_update", "seq": 11, "utterances": [0, 2], "speaker": "Ada",
                        "previous": "SPEAKER_00", "speaker_id": "voice_1", "speaker_confidence": 0.91})
        assert [r["name"] for r in lines(driver)] == ["Ada", "SPEAKER_00", "Ada"]
        title = driver.execute_script("return document.querySelector('#transcript .line .speaker').title")
        assert "0.91" in title
        assert_clean(driver, server.url)


@pytest.mark.slow
def test_live_mode_shows_partials_then_speaker_lines(tmp_path):
    server = keyed_server()
    with browser(flags=fake_microphone(microphone_wav(tmp_path))) as driver:
        start_live(driver, server)
        seen: list[dict] = []
        watch(driver, has_expected, 90, seen)
        stop_live(driver)
        rows = lines(driver)
        # partials came first, in grey: not the colour final text is drawn in, and their words ended up
        # in the final lines
        assert int(by_id(driver, "live-section").get_attribute("data-partials")) > 0 and seen
        final_colour = driver.execute_script(
            "return getComputedStyle(document.querySelector('#transcript .line .text')).color")
        assert {p["colour"] for p in seen} != {final_colour} and final_colour not in {p["colour"] for p in seen}
        heard = set(said(rows))
        partial_words = [w for p in seen for w in normalize_words(p["text"])]
        assert sum(w in heard for w in partial_words) >= 0.7 * len(partial_words), (partial_words, heard)
        # the final lines: the reader's and JFK's turns under two different, coloured speakers
        reader, jfk = line_with(rows, "dashwood"), line_with(rows, "fellow americans")
        assert reader["speaker"] and jfk["speaker"] and reader["speaker"] != jfk["speaker"]
        assert line_with(rows, "your country")["speaker"] == jfk["speaker"]
        utterances = final_utterances(driver)
        assert len(utterances) == len(set(utterances))
        # renaming works on live lines as on a file's
        field = driver.find_element("css selector", f"#speaker-list input[data-speaker='{jfk['speaker']}']")
        field.clear()
        field.send_keys("JFK")
        assert {r["name"] for r in lines(driver) if r["speaker"] == jfk["speaker"]} == {"JFK"}
        stats = driver.execute_script("return window.__whospokeLive.stats()")
        assert stats["acked"] == stats["sent"] > 0 and stats["reconnects"] == 0
        assert stats["tentative"] > 0  # partials with tentative words were drawn (an utterance's first has them)
        print(f"\nlive: {stats['finals']} finals, {stats['partials']} partials ({stats['tentative']} with tentative "
              f"words), lag after speech end "
              f"{', '.join(f'{s:.1f}' for s in stats['lags'])} s")
        assert_clean(driver, server.url)


@pytest.mark.slow
def test_live_mode_resumes_after_a_dropped_connection(tmp_path):
    server = keyed_server()
    with browser(flags=fake_microphone(microphone_wav(tmp_path))) as driver:
        start_live(driver, server)
        watch(driver, lambda rows: "dashwood" in said(rows), 60, [])
        before = driver.execute_script("return window.__whospokeLive.stats()")
        driver.execute_script("window.__whospokeLive.dropForTest()")
        wait_until(lambda: driver.execute_script("return window.__whospokeLive.stats().reconnects") == 1, 10,
                   "a reconnect")
        wait_until(lambda: live_state(driver) == "live", 30, "the resumed stream")
        watch(driver, has_expected, 90, [])
        stop_live(driver)
        after = driver.execute_script("return window.__whospokeLive.stats()")
        assert after["sessionId"] == before["sessionId"] and after["reconnects"] == 1  # resumed, not restarted
        assert after["acked"] == after["sent"] > before["sent"]  # the server has every byte, none twice
        # nothing lost and nothing twice: each utterance once, the turns' words in the order spoken
        utterances = final_utterances(driver)
        assert len(utterances) == len(set(utterances)) and utterances == sorted(utterances, key=int)
        words = said(lines(driver))
        firsts = [words.index(w) for w in ["dashwood", "americans", "young", "country"]]
        assert firsts == sorted(firsts), words
        assert_clean(driver, server.url)
