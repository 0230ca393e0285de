"""The whole pipeline on real speech with the real bundled models (tiny.en, Silero, resemblyzer)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
import time

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, load_reference
from scoring import speaker_accuracy, wer

from shared.core.domain import SpeakerHints, TranscribeOptions
from shared.pipeline.flow import PipelineRun, transcribe
from shared.pipeline.runner import InProcessRunner, Runner
from shared.pipeline.stages import Stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_speakers():
    return load_audio(TWO_SPEAKERS), load_reference(TWO_SPEAKERS)


@pytest.fixture(scope="module")
def one_speaker():
    return load_audio(ONE_SPEAKER), load_reference(ONE_SPEAKER)


@pytest.fixture(scope="module")
def two_speaker_transcript(runner, two_speakers):
    samples, _ = two_speakers
    return transcribe(samples, TranscribeOptions(word_timestamps=True), runner)


def test_expected_words_appear(two_speaker_transcript, two_speakers):
    _, ref = two_speakers
    text = " ".join(s.text for s in two_speaker_transcript.segments)
    assert "Americans" in text and "country" in text and "Dashwood" in text
    assert wer(ref["text"], text) < 0.15
    assert two_speaker_transcript.language == "en"


def test_two_real_speakers_come_out_as_two_with_turns_near_the_truth(two_speaker_transcript, two_speakers):
    _, ref = two_speakers
    t = two_speaker_transcript
    assert t.speakers == ["SPEAKER_00", "SPEAKER_01"]
    words = [w for s in t.segments for w in s.words]
    accuracy, mapping = speaker_accuracy(words, ref["turns"])
    assert len(set(mapping.values())) == 2, mapping
    assert accuracy >= 0.95
    # each speaker change in the reference has a segment boundary within 0.5 s of it
    boundaries = [s.start for s in t.segments]
    for prev, turn in zip(ref["turns"], ref["turns"][1:]):
        if prev["speaker"] != turn["speaker"]:
            assert min(abs(b - turn["start"]) for b in boundaries) < 0.5, turn


def test_one_speaker_comes_out_as_one(runner, one_speaker):
    samples, ref = one_speaker
    t = transcribe(samples, TranscribeOptions(), runner)
    assert t.speakers == ["SPEAKER_00"]
    assert {s.speaker for s in t.segments} == {"SPEAKER_00"}
    assert wer(ref["text"], " ".join(s.text for s in t.segments)) < 0.15


def test_speaker_hints_are_obeyed(runner, one_speaker, two_speakers):
    assert len(transcribe(one_speaker[0], TranscribeOptions(speakers=SpeakerHints(num_speakers=2)), runner).speakers) == 2
    assert transcribe(two_speakers[0], TranscribeOptions(speakers=SpeakerHints(max_speakers=1)), runner).speakers == [
        "SPEAKER_00"
    ]


def test_without_diarization_there_are_no_speakers_and_no_words_unless_asked(runner, one_speaker):
    t = transcribe(one_speaker[0], TranscribeOptions(diarize=False), runner)
    assert t.speakers == [] and t.segments
    assert all(s.speaker is None and s.words is None for s in t.segments)


def test_word_timestamps_are_ordered_and_inside_the_clip(two_speaker_transcript):
    words = [w for s in two_speaker_transcript.segments for w in s.words]
    assert all(0 <= w.start <= w.end <= two_speaker_transcript.duration for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    for seg in two_speaker_transcript.segments:
        assert {w.speaker for w in seg.words} == {seg.speaker}


class RecordingRunner(InProcessRunner):
    """The real in-process runner, noting when each stage call runs."""

    def __init__(self, worker):
        super().__init__(worker)
        self.calls: list[tuple[Stage, float, float]] = []
        self._lock = threading.Lock()

    def _submit(self, stage, *args, **kwargs):
        def timed(*a, **kw):
            start = time.monotonic()
            try:
                return self.worker.run(stage, *a, **kw)
            finally:
                with self._lock:
                    self.calls.append((Stage(stage), start, time.monotonic()))

        return self._pools[Stage(stage)].submit(timed, *args, **kwargs)


def test_diarization_runs_while_transcription_runs(worker, two_speakers):
    with RecordingRunner(worker) as recording:
        transcribe(two_speakers[0], TranscribeOptions(), recording)
    spans = {stage: (start, end) for stage, start, end in recording.calls}
    diarize, transcribe_span = spans[Stage.DIARIZE], spans[Stage.TRANSCRIBE]
    assert diarize[0] < transcribe_span[1] and transcribe_span[0] < diarize[1], recording.calls


def test_segments_stream_in_time_order_with_progress(runner, two_speakers):
    progress = []
    run = PipelineRun(two_speakers[0], TranscribeOptions(), runner, batch_size=1,
                      on_progress=lambda done, total: progress.append((done, total)))
    segments = list(run)
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    assert progress[0][0] == 0 and progress[-1][0] == pytest.approx(run.duration)
    assert all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))


class HeldDiarization(Runner):
    """The real stages, with the diarization result held back until `release` is set: a diarizer that
    takes longer than transcription, as on a long recording."""

    def __init__(self, inner: Runner):
        self.inner = inner
        self.release = threading.Event()

    def _submit(self, stage, *args, **kwargs) -> Future:
        future = self.inner._submit(stage, *args, **kwargs)
        if Stage(stage) is not Stage.DIARIZE:
            return future
        held: Future = Future()

        def hand_over():
            self.release.wait(120)
            try:
                held.set_result(future.result())
            except BaseException as exc:  # noqa: BLE001
                held.set_exception(exc)

        threading.Thread(target=hand_over, daemon=True).start()
        return held


def test_progress_moves_while_the_diarizer_is_still_working(runner, two_speakers):
    samples, _ = two_speakers
    audio = np.concatenate([samples] * 3)  # ~84 s: several batches of one chunk
    held = HeldDiarization(runner)
    seen: list[float] = []

    def on_progress(done: float, total: float) -> None:
        seen.append(done)
        if done >= 0.8 * total:
            held.release.set()

    transcript = PipelineRun(audio, TranscribeOptions(), held, batch_size=1, on_progress=on_progress).transcript()
    before = [d for d in seen if d > 0]
    assert held.release.is_set() and len(set(before)) >= 3  # it advanced batch by batch, not held up
    assert len(transcript.speakers) == 2 and all(s.speaker for s in transcript.segments)
