"""The live endpointer's second look (shared/live/endpoint.py): sound well over the stream's running noise
floor that Silero scores as silence opens an utterance, and keeps one open; a steady loud noise does not
hold one open for ever. Real Silero on synthetic signals and on the tinny-voice fixture; a few seconds
of CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import TWO_SPEAKERS, load_audio, load_reference

from shared.core.domain import SAMPLE_RATE
from shared.live.endpoint import FLOOR_S, LOUD_HOLD_S, Endpointer, RunningFloor
from shared.pipeline.silero import WINDOW, SileroState

TINNY = Path(__file__).parent / "fixtures" / "tinny_voice.flac"
LIVE = {"threshold": 0.2, "neg_threshold": 0.1}  # the service's STREAM_VAD_THRESHOLD / _NEG_THRESHOLD


def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** (dbfs / 20) / np.sqrt(np.mean(np.square(x)))).astype(np.float32)


def floor(seconds: float, seed: int = 0) -> np.ndarray:
    return at_dbfs(np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)), -60.0)


def hum(seconds: float) -> np.ndarray:
    """A 1 kHz tone swelling and fading four times a second, as syllables do: -35 dBFS, Silero calls it
    silence."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return at_dbfs(np.sin(2 * np.pi * 1000 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2, -35.0)


def tune(seconds: float) -> np.ndarray:
    """Notes every 0.5 s with 50 ms between them (music: never a pause), -35 dBFS."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    for k in range(int(seconds * 2)):
        a, b = int(k * 0.5 * SAMPLE_RATE), int((k * 0.5 + 0.45) * SAMPLE_RATE)
        out[a:b] = np.sin(2 * np.pi * (523, 659, 784, 880)[k % 4] * t[a:b]) * np.exp(-4 * (t[a:b] - t[a]))
    return at_dbfs(out, -35.0)


def fan(seconds: float, dbfs: float = -30.0) -> np.ndarray:
    """Steady broadband noise, 30 dB over the floor."""
    return at_dbfs(np.random.default_rng(1).standard_normal(int(seconds * SAMPLE_RATE)), dbfs)


def placed(sound: np.ndarray, before: float = 3.0, after: float = 3.0) -> np.ndarray:
    """`sound` over the floor, with the floor alone before and after it."""
    tail = [floor(after, 4)] if after else []
    return np.concatenate([floor(before, 2), sound + floor(len(sound) / SAMPLE_RATE, 3), *tail])


def run(audio: np.ndarray, piece: int = 8000, **kwargs) -> tuple[Endpointer, list[tuple[float, float]]]:
    """The utterances (seconds) an endpointer cuts from `audio` fed `piece` samples at a time."""
    ep, spans, start = Endpointer(**{**LIVE, **kwargs}), [], None
    for at in range(0, len(audio), piece):
        for b in ep.feed(audio[at : at + piece]):
            if b.kind == "start":
                start = b.sample
            else:
                spans.append((start / SAMPLE_RATE, b.sample / SAMPLE_RATE))
    return ep, spans


def silero(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // WINDOW
    return SileroState().score(audio[: n * WINDOW].reshape(n, WINDOW))


def covered(spans, start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)


def test_a_loud_stretch_silero_scores_as_silence_opens_an_utterance():
    audio = placed(hum(3.0))
    probs = silero(audio)[int(3.0 * SAMPLE_RATE) // WINDOW : int(6.0 * SAMPLE_RATE) // WINDOW]
    assert probs.max() < LIVE["threshold"]  # the premise: Silero does not call it speech
    assert run(audio, second_look=False)[1] == []
    ep, spans = run(audio)
    assert len(spans) == 1 and covered(spans, 3.0, 6.0) >= 2.9, spans
    assert spans[0][1] < 7.0 and not ep.is_open  # it closes once the sound stops
    # the probabilities speaker turns read stay Silero's: none of it counts as speech there
    assert ep.speech_share(int(spans[0][0] * SAMPLE_RATE), int(spans[0][1] * SAMPLE_RATE)) == 0.0


def test_a_loud_stretch_keeps_an_open_utterance_from_closing():
    """Speech Silero hears, then at once sound it does not: one utterance to the end of the sound."""
    speech = load_audio(TWO_SPEAKERS)[: 7 * SAMPLE_RATE]  # the reader's first turn ends at 7.0 s
    audio = placed(np.concatenate([speech, hum(3.0)]))
    _, without = run(audio, second_look=False)
    _, spans = run(audio)
    assert len(without) == 1 and without[0][1] < 10.6, without
    assert len(spans) == 1 and 12.9 <= spans[0][1] < 14.0, spans


def test_a_tinny_voice_silero_rejects_is_heard():
    """The reader, then JFK through a tinny channel 8 dB over the floor (Silero: under 0.1)."""
    audio = load_audio(TINNY)
    jfk = next(t for t in load_reference(TINNY)["turns"] if t["speaker"] == "jfk")
    _, without = run(audio, second_look=False)
    _, spans = run(audio)
    # (his two pauses, 1.7 s together, may stay out, as in the file pipeline)
    assert covered(spans, jfk["start"], jfk["end"]) >= 0.75 * (jfk["end"] - jfk["start"]), spans
    assert covered(without, jfk["start"], jfk["end"]) < 0.3 * (jfk["end"] - jfk["start"]), without


@pytest.mark.parametrize("noise", [fan, tune], ids=["fan", "tune"])
def test_steady_loud_noise_does_not_hold_an_utterance_open(noise):
    """40 s of a noise that never pauses: the second look alone holds an utterance at most LOUD_HOLD_S,
    then waits for the sound to dip before it opens another (and by then the floor has risen to it)."""
    audio = placed(noise(40.0))
    ep, spans = run(audio)
    assert len(spans) <= 1, spans
    assert all(b - a <= LOUD_HOLD_S + 1.0 for a, b in spans), spans
    assert not ep.is_open


def test_speech_over_a_steady_noise_is_still_heard():
    """The second look going deaf to a fan does not deafen Silero: a voice over it opens utterances."""
    speech = load_audio(TWO_SPEAKERS)[: 8 * SAMPLE_RATE]
    noise = fan(23.0, -40.0)
    noise[15 * SAMPLE_RATE :] += speech
    ep, spans = run(placed(noise, after=0.0))
    assert spans and spans[0][1] < 15.0  # the fan alone: held LOUD_HOLD_S, then let go
    voice = [(a, b) for a, b in spans if b > 18.0] + ([(spans[-1][0], 26.0)] if ep.is_open else [])
    assert covered(voice, 18.3, 26.0) >= 6.0, spans


def test_boundaries_do_not_depend_on_the_feed_sizes():
    audio = load_audio(TINNY)
    rng = np.random.default_rng(5)
    whole = run(audio, piece=len(audio))[1]
    assert run(audio, piece=int(rng.integers(100, 3000)))[1] == whole == run(audio, piece=1600)[1]


def test_the_running_floor_follows_the_recent_stream_in_bounded_memory():
    floor = RunningFloor(FLOOR_S)
    assert floor.value is None
    for _ in range(int(2 * FLOOR_S * SAMPLE_RATE / WINDOW)):
        floor.add(-60.0)
    assert floor.value == pytest.approx(-60.0)
    size = floor._levels.nbytes
    for _ in range(int(3 * FLOOR_S * SAMPLE_RATE / WINDOW)):  # a noise that goes on becomes the floor
        floor.add(-30.0)
    assert floor.value == pytest.approx(-30.0) and floor._levels.nbytes == size
    assert not floor.is_loud(-27.0) and floor.is_loud(-23.0)


def test_a_split_cuts_where_asked_and_both_pieces_keep_their_speech_scores():
    audio = load_audio(TWO_SPEAKERS)[: 6 * SAMPLE_RATE]  # the reader speaks throughout
    ep = Endpointer(threshold=0.2, neg_threshold=0.1)
    kinds = [b.kind for b in ep.feed(audio)]
    assert kinds == ["start"] and ep.is_open
    before = ep.speech_share(SAMPLE_RATE, 3 * SAMPLE_RATE)
    cut = ep.quietest(4 * SAMPLE_RATE)
    assert abs(cut - 4 * SAMPLE_RATE) <= 0.6 * SAMPLE_RATE + WINDOW
    assert [(b.kind, b.sample) for b in ep.split(cut)] == [("end", cut), ("start", cut)]
    # a range of the closed piece is read from it, not from the utterance the cut opened
    assert ep.speech_share(SAMPLE_RATE, 3 * SAMPLE_RATE) == pytest.approx(before) and before > 0.5
    assert ep.split(cut - SAMPLE_RATE) == []  # outside the open utterance: nothing
