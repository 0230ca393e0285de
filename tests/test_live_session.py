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
    """Four turns of the two-speaker fixture (each at least 4 s: a change needs 2.4 s of a voice on
    each side to be heard) with 0.15 s between them: the speakers hand over faster than silence closes
    an utterance (STREAM_SILENCE_MS, 600 ms)."""
    audio, pieces, turns, at = load_audio(TWO_SPEAKERS), [], [], 0.0
    gap = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    ref = reference_turns(TWO_SPEAKERS)  # reader, JFK, reader, JFK, reader, JFK
    for spans in ([ref[0]], [ref[1]], [ref[4]], [ref[3], ref[5]]):  # JFK's two short turns as one
        speaker, length = spans[0][0], 0
        for _speaker, start, end in spans:
            piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            pieces += [piece, gap]
            length += len(piece) + len(gap)
        turns.append((speaker, at, at + (length - len(gap)) / SAMPLE_RATE))
        at += length / SAMPLE_RATE
    return np.concatenate(pieces), turns


def quick_text() -> list[str]:
    turns = load_reference(TWO_SPEAKERS)["turns"]
    return [turns[i]["text"] for i in (0, 1, 4, 3, 5)]


def settled_speakers(events) -> dict[int, str]:
    """Each final's speaker once the session's speaker corrections are applied, as a client does."""
    speakers = {e.item: e.speaker for e in events if isinstance(e, ev.FinalUtterance)}
    for e in events:
        if isinstance(e, ev.SpeakerUpdate):
            assert all(speakers[i] == e.previous for i in e.items)
            speakers.update({i: e.speaker for i in e.items})
    return speakers


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
        assert purity(finals, reference) < 0.75
        return
    assert purity(finals, reference) > 0.9, [(f.start, f.end, f.speaker) for f in finals]
    # once corrected, each voice has one label, and the two differ
    speakers, by_voice = settled_speakers(got), {}
    for f in finals:
        voice = max(reference, key=lambda t: min(t[2], f.end) - max(t[1], f.start))[0]
        by_voice.setdefault(voice, set()).add(speakers[f.item])
    assert all(len(labels) == 1 for labels in by_voice.values()) and len(set.union(*by_voice.values())) == 2, by_voice
    assert wer(" ".join(t for t in quick_text()), " ".join(f.text for f in finals)) < 0.25
