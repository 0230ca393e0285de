"""Named speakers on the browser page, in real headless Chromium against a real server with the real models:
remember a transcript's speaker as a voice (from that speaker's lines in the job's stored clip), see it in
the Voices panel, transcribe again with "Name known voices" on and see the name on that speaker's lines
(the match's confidence in the tooltip), rename the voice in the panel, delete it (after a confirmation);
and live mode naming a remembered voice too."""

from __future__ import annotations

import re

import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS
from browser_support import browser, fake_microphone, requested_urls, wait_until
from live_server import live_server
from test_browser import alert_text, assert_clean, by_id, line_with, lines, load
from test_browser_live import has_expected, live_state, microphone_wav, stop_live

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

KEY = "voices-page-key-0123456789"  # this module's own server and key: no other test's voices in its list


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("browser-voices") / "storage", {"API_KEYS": KEY}) as s:
        yield s


@pytest.fixture
def no_voices(server):
    """Each test starts with no voices for KEY (whichever ran before)."""
    with server.client(headers={"X-API-Key": KEY, "Origin": server.url}) as client:
        for voice in client.get("/api/voices").json()["voices"]:
            assert client.delete(f"/api/voices/{voice['voice_id']}").status_code == 204


def voices(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#voice-list .voice-name')].map((e) => e.textContent)")


def identify(driver) -> dict:
    return driver.execute_script(
        "const c = document.getElementById('identify'); return {checked: c.checked, disabled: c.disabled}")


def speaker_tags(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#transcript .line .speaker')].map((t) => ({
            speaker: t.dataset.speaker, name: t.textContent, title: t.title}))""")  # fmt: skip


def tooltips(driver, name: str) -> bool:
    """Every line of the named speaker has the match's confidence in its tooltip."""
    tags = [t for t in speaker_tags(driver) if t["speaker"] == name]
    return bool(tags) and all(re.search(r"confidence [01]\.\d\d", t["title"]) for t in tags)


def transcribe(driver) -> list[dict]:
    """Submit the chosen file; the new transcript's lines (the old one is hidden as soon as it is submitted)."""
    by_id(driver, "submit").click()
    wait_until(lambda: not by_id(driver, "result-section").is_displayed() or alert_text(driver), 10, "the submit")
    wait_until(lambda: by_id(driver, "result-section").is_displayed() or alert_text(driver), 240, "the transcript")
    assert alert_text(driver) == ""
    return lines(driver)


def remember(driver, label: str, name: str) -> str:
    """Open the speaker's "Remember voice…" form, give the name, submit; the form's status when it has settled."""
    form = driver.find_element("css selector", f"#speaker-list form.remember-form[data-speaker='{label}']")
    if not form.is_displayed():
        driver.find_element("css selector", f"#speaker-list button.remember-toggle[data-speaker='{label}']").click()
    field = form.find_element("css selector", "input")
    field.clear()
    field.send_keys(name)
    form.find_element("css selector", "button[type=submit]").click()
    status = form.find_element("css selector", ".remember-status")
    return wait_until(lambda: status.text not in ("", "Remembering…") and status.text, 120, "the enrolment")


def test_remember_a_speaker_then_name_it_rename_and_delete_the_voice(server, no_voices):
    with browser() as driver:
        load(driver, server.url)
        by_id(driver, "api-key").send_keys(KEY)
        by_id(driver, "key-form").find_element("css selector", "button[type=submit]").click()
        wait_until(lambda: by_id(driver, "voices-section").get_attribute("data-count") == "0", 10, "the voice list")
        assert voices(driver) == []
        assert identify(driver) == {"checked": False, "disabled": True}  # nothing to name anyone with yet

        by_id(driver, "file").send_keys(str(TWO_SPEAKERS))
        by_id(driver, "num-speakers").send_keys("2")
        rows = transcribe(driver)
        reader, jfk = line_with(rows, "John Dashwood")["speaker"], line_with(rows, "fellow Americans")["speaker"]
        assert rows[0]["speaker"] == reader != jfk  # the reader speaks first
        forms = driver.find_elements("css selector", "#speaker-list form.remember-form")
        assert len(forms) == 2 and not any(f.is_displayed() for f in forms)  # each opens from its own button

        # a name the API refuses: its own message, in the form
        refused = remember(driver, reader, "SPEAKER_07")
        assert "invalid_voice_name" in refused
        assert voices(driver) == []

        done = remember(driver, reader, "Reader")
        assert done.startswith("Remembered as Reader"), done
        # the transcript follows the name; the Voices panel lists it; the option turns itself on
        assert {r["name"] for r in lines(driver) if r["speaker"] == reader} == {"Reader"}
        wait_until(lambda: voices(driver) == ["Reader"], 10, "Reader in the Voices panel")
        assert identify(driver) == {"checked": True, "disabled": False}

        # transcribed again with "Name known voices" on: the server names the reader, and only the reader
        rows = transcribe(driver)
        assert line_with(rows, "John Dashwood")["speaker"] == "Reader"
        assert line_with(rows, "young man")["speaker"] == "Reader"
        assert line_with(rows, "fellow Americans")["speaker"].startswith("SPEAKER_")
        assert tooltips(driver, "Reader")
        assert all(t["title"] == "" for t in speaker_tags(driver) if t["speaker"] != "Reader")  # not remembered
        known = driver.find_element("css selector", "#speaker-list input[data-speaker='Reader']")
        item = known.find_element("xpath", "..")
        assert "remembered voice" in item.text
        assert not item.find_elements("css selector", "button.remember-toggle")  # already known

        # rename it in the panel: the list follows
        field = driver.find_element("css selector", "#voice-list .voice-item input")
        field.clear()
        field.send_keys("The Reader")
        driver.find_element("css selector", "#voice-list .voice-item button[type=submit]").click()
        wait_until(lambda: voices(driver) == ["The Reader"], 10, "the renamed voice")

        # delete it: nothing happens until the confirmation is accepted
        driver.find_element("css selector", "#voice-list .voice-delete").click()
        wait_until(lambda: _alert(driver), 5, "the confirmation").dismiss()
        assert voices(driver) == ["The Reader"]
        driver.find_element("css selector", "#voice-list .voice-delete").click()
        wait_until(lambda: _alert(driver), 5, "the confirmation").accept()
        wait_until(lambda: by_id(driver, "voices-section").get_attribute("data-count") == "0", 10, "the deletion")
        assert voices(driver) == []
        assert identify(driver) == {"checked": False, "disabled": True}
        assert "Deleted The Reader" in by_id(driver, "voices-status").text
        assert alert_text(driver) == ""
        assert_clean(driver, server.url, answered=(422,))
    with server.client(headers={"X-API-Key": KEY}) as client:
        assert client.get("/api/voices").json()["voices"] == []


def test_live_mode_names_a_remembered_voice(server, no_voices, tmp_path):
    with server.client(headers={"X-API-Key": KEY}) as client:  # the reader alone, remembered from a file
        r = client.post("/api/voices", data={"name": "Reader"}, files={"file": ("one.flac", ONE_SPEAKER.read_bytes())},
                        headers={"Origin": server.url})  # fmt: skip
        assert r.status_code == 201, r.text
    with browser(flags=fake_microphone(microphone_wav(tmp_path))) as driver:
        load(driver, server.url)
        by_id(driver, "api-key").send_keys(KEY)
        by_id(driver, "key-form").find_element("css selector", "button[type=submit]").click()
        wait_until(lambda: voices(driver) == ["Reader"], 10, "the voice list")
        assert identify(driver) == {"checked": True, "disabled": False}  # on, as this key has a voice
        by_id(driver, "num-speakers").send_keys("2")
        by_id(driver, "live-toggle").click()
        wait_until(lambda: live_state(driver) == "live" or alert_text(driver), 30, "the stream to open")
        wait_until(lambda: alert_text(driver) or has_expected(lines(driver)), 120, "the fixture's turns", interval=0.2)
        assert alert_text(driver) == ""
        stop_live(driver)
        rows = lines(driver)
        assert line_with(rows, "Dashwood")["speaker"] == "Reader"
        assert line_with(rows, "Americans")["speaker"] != "Reader"
        assert tooltips(driver, "Reader")
        streams = [u for u in requested_urls(driver) if "/ws/stream" in u]
        assert streams and all("identify=true" in u for u in streams)
        assert_clean(driver, server.url)


def _alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None
