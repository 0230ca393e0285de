"""Every output format parses with the library the field uses for it."""

from __future__ import annotations

import io
import json

import pytest
import srt
import webvtt
from pyannote.database.util import load_rttm

from shared.core.domain import Segment, Transcript, Word
from shared.service.formats import render

TRANSCRIPT = Transcript(
    language="en",
    duration=12.5,
    speakers=["SPEAKER_00", "SPEAKER_01"],
    segments=[
        Segment(speaker="SPEAKER_00", start=0.5, end=3.25, text="Hello there.",
                words=[Word(start=0.5, end=1.0, word=" Hello", speaker="SPEAKER_00"),
                       Word(start=1.2, end=3.25, word=" there.", speaker="SPEAKER_00")],
                avg_logprob=-0.21, compression_ratio=0.8, no_speech_prob=0.01, temperature=0.0,
                tokens=[18435, 612, 13]),
        Segment(speaker="SPEAKER_01", start=3.9, end=3671.042, text="General Kenobi, a long one."),
    ],
)


def test_srt_parses_with_srt_library():
    subs = list(srt.parse(render(TRANSCRIPT, "srt")))
    assert [s.index for s in subs] == [1, 2]
    assert subs[0].start.total_seconds() == 0.5 and subs[0].end.total_seconds() == 3.25
    assert subs[1].end.total_seconds() == pytest.approx(3671.042)
    assert subs[0].content == "[SPEAKER_00] Hello there."


def test_vtt_parses_with_webvtt_py():
    captions = webvtt.from_buffer(io.StringIO(render(TRANSCRIPT, "vtt")))
    assert [c.start for c in captions] == ["00:00:00.500", "00:00:03.900"]
    assert captions[1].end == "01:01:11.042"
    assert captions[0].voice == "SPEAKER_00" and captions[0].text == "Hello there."


def test_rttm_loads_with_pyannote_core(tmp_path):
    path = tmp_path / "out.rttm"
    path.write_text(render(TRANSCRIPT, "rttm"))
    annotation = load_rttm(path)["audio"]
    assert sorted(annotation.labels()) == ["SPEAKER_00", "SPEAKER_01"]
    assert annotation.label_duration("SPEAKER_00") == pytest.approx(2.75)


def test_txt_and_json():
    assert render(TRANSCRIPT, "txt").splitlines()[0] == "SPEAKER_00: Hello there."
    body = json.loads(render(TRANSCRIPT, "json"))
    assert body["segments"][0]["words"][1]["word"] == " there."
    assert Transcript.model_validate(body) == TRANSCRIPT  # the decoder statistics too, floats exactly
    assert body["segments"][1]["avg_logprob"] is None and body["segments"][1]["tokens"] is None  # none known
    assert "words" not in json.loads(render(TRANSCRIPT, "json", include_words=False))["segments"][0]


def test_without_speakers_no_labels_appear():
    plain = TRANSCRIPT.model_copy(update={"segments": [s.model_copy(update={"speaker": None}) for s in TRANSCRIPT.segments]})
    assert "[" not in render(plain, "srt") and "<v" not in render(plain, "vtt")
    assert render(plain, "txt").splitlines()[0] == "Hello there."
