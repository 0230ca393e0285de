"""Headless Chromium (Debian's `chromium` + `chromium-driver`, no browser download) driven by Selenium,
for the browser-page tests.

`browser(download_dir)` yields a driver with the browser console and the network log recorded:
- `console_errors(driver)`: console messages at SEVERE/WARNING (a failed load is one too),
- `requested_urls(driver)`: every URL the page asked for (Network.requestWillBeSent in the performance log),
  so a test can prove nothing left the origin.
`browser(flags=fake_microphone(wav))` gives the page a microphone that plays a wav file.
Chromium is started with background networking off: otherwise it calls Google's services on its own.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--mute-audio",
    "--window-size=1280,1000",
]


def require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; .ci/run does)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")


def fake_microphone(wav: Path) -> list[str]:
    """Flags that give the page a microphone playing `wav` (16-bit PCM; Chromium loops it) and grant it
    without asking."""
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}"]  # fmt: skip


@contextmanager
def browser(download_dir: Path | None = None, flags: list[str] | None = None) -> Iterator:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="whospoke-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, *(flags or [])]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if download_dir is not None:
        options.add_experimental_option("prefs", {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        })  # fmt: skip
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.get("about:blank")  # the browser's own start page is not the page under test: drop its log
    driver.get_log("performance")
    driver.get_log("browser")
    driver.seen_urls = []  # type: ignore[attr-defined]  # the performance log is drained on read
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def requested_urls(driver) -> list[str]:
    """Every URL requested since the browser started (accumulated: reading the log empties it)."""
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            driver.seen_urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            driver.seen_urls.append(message["params"]["url"])
    return list(driver.seen_urls)


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs that are neither the origin's nor the page's own in-memory ones (blob:, data:)."""
    ws_origin = origin.replace("http", "ws", 1)
    return [
        u for u in urls
        if not (u == origin or u.startswith((origin + "/", ws_origin + "/", f"blob:{origin}/", "data:")))
    ]  # fmt: skip


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_for_download(directory: Path, suffix: str, timeout: float = 30.0) -> Path:
    def done() -> Path | None:
        files = [p for p in directory.glob(f"*{suffix}") if not p.name.endswith(".crdownload")]
        return files[0] if files else None

    return wait_until(done, timeout, f"a downloaded *{suffix} in {directory}")
