"""The live engine in-process with the real models: finals, speakers, clear, and bounded memory."""

from __future__ import annotations

import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, load_reference
from scoring import wer

from shared.core.domain import SAMPLE_RATE, TranscribeOptions
from shared.live import events as ev
from shared.live.models import LiveModels
from shared.live.session import PREROLL_S, LiveConfig, LiveSession

pytestmark = pytest.mark.slow


def session(runner, **config):
    got: list = []
    options = config.pop("options", TranscribeOptions())
    return LiveSession(LiveModels(runner), LiveConfig(options=options, **config), got.append), got


def test_finals_speakers_and_the_buffer_stays_one_utterance_long(runner):
    live, got = session(runner, partials=False)
    audio, longest = load_audio(TWO_SPEAKERS), 0
    for at in range(0, len(audio), 4000):
        live.feed(audio[at : at + 4000])
        longest = max(longest, len(live._buffer))
    assert live.finish(120)
    finals = [e for e in got if isinstance(e, ev.FinalUtterance)]
    assert wer(load_reference(TWO_SPEAKERS)["text"], " ".join(f.text for f in finals)) < 0.25
    assert [f.item for f in finals] == sorted(f.item for f in finals)
    assert {f.speaker for f in finals} == {"SPEAKER_00", "SPEAKER_01"}
    assert [e.speaker for e in got if isinstance(e, ev.SpeakerFound)] == ["SPEAKER_00", "SPEAKER_01"]
    utterance = max(f.end - f.start for f in finals)
    assert longest <= (utterance + PREROLL_S + 1.0) * SAMPLE_RATE  # never the whole stream


def test_cleared_utterance_gets_no_final_and_later_ones_still_come(runner):
    live, got = session(runner, turn_detection=False, partials=False)
    audio = load_audio(ONE_SPEAKER)
    live.feed(audio[: 3 * SAMPLE_RATE])
    live.clear()
    live.feed(audio[3 * SAMPLE_RATE : 9 * SAMPLE_RATE])
    assert live.commit()
    assert live.finish(60)
    finals = [e for e in got if isinstance(e, ev.FinalUtterance)]
    assert [f.item for f in finals] == [1] and finals[0].start >= 3.0 and finals[0].text
    assert not live.commit()  # nothing open any more
