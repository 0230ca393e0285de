"""`whospoke transcribe --voice NAME=FILE`: speakers named after reference recordings, per run."""

from __future__ import annotations

import pytest
import srt
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_reference
from test_cli import run_cli


def reference_speaker(start: float, end: float) -> str:
    turns = load_reference(TWO_SPEAKERS)["turns"]
    return max(turns, key=lambda t: min(end, t["end"]) - max(start, t["start"]))["speaker"]


@pytest.mark.slow
def test_a_reference_names_the_reader_and_leaves_jfk_unnamed(tmp_path):
    out = tmp_path / "talk.srt"
    r = run_cli("transcribe", str(TWO_SPEAKERS), "-f", "srt", "-o", str(out), "--voice", f"The Reader={ONE_SPEAKER}")
    assert r.returncode == 0, r.stderr
    subs = list(srt.parse(out.read_text()))
    assert len(subs) >= 4
    for sub in subs:
        label = sub.content.split("]")[0].lstrip("[")
        who = reference_speaker(sub.start.total_seconds(), sub.end.total_seconds())
        assert (label == "The Reader") == (who == "librivox_reader"), (label, who, sub.content)
        assert label == "The Reader" or label.startswith("SPEAKER_")
    assert ONE_SPEAKER.exists()  # the reference is read, never consumed


@pytest.mark.parametrize(
    "args,says",
    [
        (["--voice", "Reader"], "expected NAME=FILE"),
        (["--voice", f"SPEAKER_01={ONE_SPEAKER}"], "unnamed speakers"),
        (["--voice", f"<b>={ONE_SPEAKER}"], "printable characters"),
        (["--voice", f"A={ONE_SPEAKER}", "--voice", f"a={ONE_SPEAKER}"], "different name"),
        (["--voice", f"A={ONE_SPEAKER}", "--no-diarize"], "--no-diarize"),
    ],
)
def test_bad_voice_arguments_are_refused_before_any_model(args, says):
    r = run_cli("transcribe", str(TWO_SPEAKERS), *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_an_unusable_reference_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    r = run_cli("transcribe", str(TWO_SPEAKERS), "--voice", f"Junk={junk}", "--voice", f"Gone={tmp_path / 'gone.wav'}")
    assert r.returncode == 1 and "--voice Junk=" in r.stderr and "Traceback" not in r.stderr, r.stderr
