"""The live engine in-process with the real models: finals, speakers, clear, and bounded memory."""

from __future__ import annotations

import time

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, load_reference, reference_turns
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


def quick_handovers() -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The two-speaker fixture with the pauses between its turns cut to 0.15 s: the speakers hand over
    faster than silence closes an utterance (STREAM_SILENCE_MS, 600 ms)."""
    audio, pieces, turns, at = load_audio(TWO_SPEAKERS), [], [], 0.0
    gap = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    for speaker, start, end in reference_turns(TWO_SPEAKERS):
        piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        pieces += [piece, gap]
        turns.append((speaker, at, at + len(piece) / SAMPLE_RATE))
        at += (len(piece) + len(gap)) / SAMPLE_RATE
    return np.concatenate(pieces), turns


def purity(finals, turns) -> float:
    """The share of the finals' time that each one's most present reference speaker speaks."""
    pure = 0.0
    for final in finals:
        by: dict[str, float] = {}
        for speaker, start, end in turns:
            by[speaker] = by.get(speaker, 0.0) + max(0.0, min(end, final.end) - max(start, final.start))
        pure += max(by.values())
    return pure / sum(f.end - f.start for f in finals)


@pytest.mark.parametrize("turns", [True, False])
def test_a_speaker_change_inside_an_utterance_cuts_it(runner, turns):
    audio, reference = quick_handovers()
    live, got = session(runner, partials=False, turn_threshold=0.3 if turns else 0.0)
    for at in range(0, len(audio), 1600):
        live.feed(audio[at : at + 1600])
        # as at real time: the encoder keeps up with 0.1 s of audio (here audio comes faster than that)
        deadline = time.monotonic() + 10
        while live._open is not None and live._open.windows_busy and time.monotonic() < deadline:
            time.sleep(0.005)
    assert live.finish(120)
    finals = [e for e in got if isinstance(e, ev.FinalUtterance)]
    if not turns:  # the case turns are for: silence alone closes utterances holding both voices
        assert purity(finals, reference) < 0.8
        return
    # one 0.7 s end of a turn is too short to be told apart (3 windows a side): it stays with the next
    assert purity(finals, reference) > 0.88, [(f.start, f.end, f.speaker) for f in finals]
    assert {f.speaker for f in finals} == {"SPEAKER_00", "SPEAKER_01"}
    assert wer(load_reference(TWO_SPEAKERS)["text"], " ".join(f.text for f in finals)) < 0.25
