"""The command line, run as a user would."""

from __future__ import annotations

import subprocess
import sys

import pytest
import srt
from audio_fixtures import TWO_SPEAKERS
from live_server import ROOT

pytestmark = pytest.mark.slow


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "shared.cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_transcribes_to_srt_with_speakers_and_progress(tmp_path):
    out = tmp_path / "talk.srt"
    r = run_cli("transcribe", str(TWO_SPEAKERS), "-f", "srt", "-o", str(out), "--num-speakers", "2", "--progress")
    assert r.returncode == 0, r.stderr
    subs = list(srt.parse(out.read_text()))
    assert {s.content.split("]")[0] for s in subs} == {"[SPEAKER_00", "[SPEAKER_01"}
    assert "100%" in r.stderr  # the progress bar reached the end


def test_without_diarization_to_stdout():
    r = run_cli("transcribe", str(TWO_SPEAKERS), "--no-diarize", "-f", "txt")
    assert r.returncode == 0, r.stderr
    assert "country" in r.stdout and "SPEAKER" not in r.stdout


def test_bad_input_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_text("not audio")
    r = run_cli("transcribe", str(junk))
    assert r.returncode == 1 and "junk.mp3" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("transcribe", str(TWO_SPEAKERS), "--min-speakers", "3", "--max-speakers", "2")
    assert r.returncode == 2 and "min_speakers" in r.stderr
