"""The live engine's bounds on their own: the sample buffer, the Opus pipe, a session's pace and clock,
manual commits at the utterance cap, and the hub's slots (parked streams count, a total cap, expiry
that does not block). The same attacks against a real server: tests/test_hostile_live.py."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, encode_as, load_audio

from shared.core.domain import SAMPLE_RATE, TranscribeOptions
from shared.live import events as ev
from shared.live.audio_in import ContainerInput
from shared.live.buffer import SampleBuffer
from shared.live.intake import MAX_PENDING_FINALS, EventRate, Intake, Pace
from shared.live.models import LiveModels
from shared.live.registry import LiveHub, ServerBusy, TooManyStreams
from shared.live.session import AHEAD_S, LiveConfig, LiveSession


def test_sample_buffer_keeps_what_a_plain_array_would():
    rng = np.random.default_rng(0)
    buffer, plain, plain_at = SampleBuffer(capacity=100), np.zeros(0, np.float32), 0
    for _ in range(2000):
        piece = rng.standard_normal(int(rng.integers(0, 700))).astype(np.float32)
        buffer.append(piece)
        plain = np.concatenate([plain, piece])
        if rng.random() < 0.3:
            cut = int(rng.integers(plain_at, plain_at + len(plain) + 1))
            buffer.trim(cut)
            plain, plain_at = plain[cut - plain_at :], cut
        assert (buffer.start, buffer.end) == (plain_at, plain_at + len(plain))
        a = int(rng.integers(plain_at - 50, plain_at + len(plain) + 50))
        want = plain[max(a - plain_at, 0) :]
        assert np.array_equal(buffer.copy(a), want)


def test_sample_buffer_does_not_grow_with_the_stream():
    """A steady stream trimmed to its last 2 s: the array stays a few times that, however long it runs."""
    buffer, piece = SampleBuffer(), np.ones(1600, np.float32)
    for _ in range(20_000):  # 2000 s of audio in 100 ms pieces
        buffer.append(piece)
        buffer.trim(buffer.end - 2 * SAMPLE_RATE)
    assert len(buffer) == 2 * SAMPLE_RATE and buffer.capacity <= 8 * SAMPLE_RATE


def test_opus_pipe_fills_while_the_session_waits_and_abort_does_not_wait(tmp_path):
    data = encode_as(TWO_SPEAKERS, "webm", tmp_path / "two.webm").read_bytes()
    release, fed = threading.Event(), []
    inp = ContainerInput(lambda samples: (fed.append(len(samples)), release.wait()), max_bytes=10_000)
    at = 0
    while inp.has_room() and at < len(data):  # as the WebSocket handler writes: while there is room
        inp.write(data[at : at + 3000])
        at += 3000
        time.sleep(0.01)
    assert fed and not inp.has_room() and 10_000 <= inp.queued < 13_000 and at < len(data)
    started = time.monotonic()
    inp.abort()  # the rest is dropped; the decoder ends once its sink returns
    assert time.monotonic() - started < 0.5 and inp.queued == 0
    release.set()
    inp._thread.join(5)
    assert not inp._thread.is_alive()


def test_a_stream_read_without_audio_coming_out_is_refused(tmp_path):
    """What the demuxer buffers is bounded too: bytes that yield no audio are not read on and on."""
    data = encode_as(TWO_SPEAKERS, "webm", tmp_path / "two.webm").read_bytes()
    errors, fed = [], []
    inp = ContainerInput(fed.append, on_error=errors.append, max_bytes=4096)
    inp.write(data[:200])  # a real header, then bytes that are no cluster of audio
    for _ in range(10):
        inp.write(b"\xec\x40\x00" + b"\0" * 4000)  # EBML Void elements
    inp.close(timeout=10)
    assert errors and not fed


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_intake_paces_audio_and_finals():
    clock, received, pending = Clock(), [0], [0]
    intake = Intake(Pace(max_speed=2.0, max_lead_s=10.0), lambda: received[0], lambda: pending[0], clock)
    received[0] = 10 * SAMPLE_RATE  # exactly the lead: go
    assert intake.wait_s() == 0
    received[0] = 12 * SAMPLE_RATE  # 2 s over the lead at 2x: wait (in short steps)
    assert intake.wait_s() > 0
    clock.now += 1.0  # 1 s later 2x has made room for 2 s
    assert intake.wait_s() == 0
    pending[0] = MAX_PENDING_FINALS  # finals waiting: no more audio whatever the pace
    assert intake.wait_s() > 0


def test_intake_too_slow_after_the_grace_and_expiry():
    clock, received = Clock(), [0]
    intake = Intake(Pace(min_rate=0.25, grace_s=30.0, max_wall_s=100.0), lambda: received[0], lambda: 0, clock)
    clock.now += 29
    assert not intake.too_slow()  # in the grace period
    clock.now += 11
    received[0] = 5 * SAMPLE_RATE  # 5 s in 40 s: under a quarter
    assert intake.too_slow()
    intake.waited = 30.0  # time the server made it wait does not count
    assert not intake.too_slow()
    received[0] = 20 * SAMPLE_RATE
    intake.waited = 0.0
    assert not intake.too_slow() and not intake.expired()
    clock.now += 61
    assert intake.expired()


def test_event_rate_is_a_token_bucket():
    clock = Clock()
    rate = EventRate(10, clock)
    assert [rate.wait_s() for _ in range(10)] == [0.0] * 10  # a burst of as many
    assert rate.wait_s() > 0
    clock.now += 0.25  # 2.5 tokens later
    assert [rate.wait_s() == 0 for _ in range(3)] == [True, True, False]


def settings(**overrides):
    values = dict(stream_max_per_key=2, stream_max_total=3, stream_resume_s=60.0, stream_max_frame_bytes=1 << 20,
                  stream_max_speed=4.0, stream_max_lead_s=60.0, stream_min_audio_rate=0.25, stream_rate_grace_s=60.0,
                  stream_max_wall_s=3600.0)
    return SimpleNamespace(**(values | overrides))


def test_parked_streams_hold_their_slots_and_expire_without_blocking():
    hub = LiveHub(None, settings())  # nothing here reaches a model
    config = LiveConfig(partials=False)
    a = hub.open(config, "key:a", "webm", SAMPLE_RATE)
    b = hub.open(config, "key:a", "pcm16", SAMPLE_RATE)
    a.attach(lambda *_: None)
    hub.park(a)  # dropped: waits for a resume, and still counts
    with pytest.raises(TooManyStreams):
        hub.open(config, "key:a", "pcm16", SAMPLE_RATE)
    assert hub.resume(a.id, "key:a") is a  # a resume takes no slot
    c = hub.open(config, "key:b", "pcm16", SAMPLE_RATE)
    with pytest.raises(ServerBusy):  # 3 in all
        hub.open(config, "key:c", "pcm16", SAMPLE_RATE)
    hub.end(b)
    hub.end(b)  # twice: one slot back, not two
    assert hub.streams_open() == 2
    a.parked_until = 0.0  # its resume window is over
    decoders = {t for t in threading.enumerate() if t.name == "live-decode"}
    started = time.monotonic()
    hub.sweep()  # expires `a` (an Opus stream: its decoder stops off this thread)
    assert time.monotonic() - started < 0.5 and hub.streams_open() == 1 and a.session.closed
    for t in decoders:
        t.join(5)
    assert not any(t.is_alive() for t in decoders)
    hub.end(c)
    hub.close()
    assert hub.streams_open() == 0


@pytest.mark.slow
def test_manual_mode_commits_at_the_utterance_cap(runner):
    """No turn detection and no commit: the server closes each utterance at max_utterance_s, so the buffer
    (and each final's audio) stays that long however much is appended."""
    got: list = []
    live = LiveSession(LiveModels(runner), LiveConfig(options=TranscribeOptions(diarize=False), turn_detection=False,
                                                      max_utterance_s=5.0, partials=False), got.append)
    longest = 0
    for _ in range(13):  # 13 s in 1 s appends
        live.feed(np.zeros(SAMPLE_RATE, np.float32))
        longest = max(longest, len(live._buffer))
    stops = [e.end for e in got if isinstance(e, ev.SpeechStopped)]
    assert stops == [5.0, 10.0]
    assert longest <= 6 * SAMPLE_RATE
    live.feed(np.zeros(20 * SAMPLE_RATE, np.float32))  # one big append is cut at the cap too
    assert [e.end for e in got if isinstance(e, ev.SpeechStopped)][2:] == [15.0, 20.0, 25.0, 30.0]
    assert live.commit() and live.finish(120)
    finals = [e for e in got if isinstance(e, (ev.FinalUtterance, ev.ItemFailed))]
    assert len(finals) == 7 and all(f.end - f.start <= 5.0 for f in finals if isinstance(f, ev.FinalUtterance))


@pytest.mark.slow
def test_a_session_ahead_of_real_time_gets_no_partials_and_its_finals_wait_in_one_lane(runner):
    """Audio fed faster than it plays: no partial work, and its finals go one at a time through the
    background lane that all such sessions share, while a session at real time submits its own at once."""
    models, got = LiveModels(runner), []
    fast = LiveSession(models, LiveConfig(options=TranscribeOptions(diarize=False), max_utterance_s=5.0,
                                          turn_detection=False), got.append)
    fast.feed(np.zeros(25 * SAMPLE_RATE, np.float32))  # 25 s at once: 5 utterances closed
    with models._lock:
        waiting = len(models._lane)
    # each closed 5 s or more ahead: all in the lane, one in its model call, four waiting
    assert AHEAD_S < 5 and models._lane_busy and waiting == 4
    assert models.partial_requests == 0
    live = LiveSession(models, LiveConfig(options=TranscribeOptions(diarize=False), turn_detection=False), got.append)
    live.feed(load_audio(ONE_SPEAKER)[: SAMPLE_RATE // 2])  # half a second, as it is spoken
    assert live.commit()
    with models._lock:
        assert len(models._lane) == waiting  # the live final did not join the lane
    assert fast.finish(120) and live.finish(120)
    finals = [e for e in got if isinstance(e, (ev.FinalUtterance, ev.ItemFailed))]
    assert len(finals) == 6 and not models._lane and not models._lane_busy
