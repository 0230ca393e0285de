"""The Modal Runner adapter at its boundary: fan-out, ordering, errors and retries.

`StageCalls` is the seam between the runner and Modal. Here it is replaced by doubles that answer
out of order, fail on purpose, or break the fan-out half-way; the last tests put the real decorated
Modal methods behind it through `.local()` and compare with the in-process runner.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import modal.exception
import numpy as np
import pytest
from scoring import assert_same_transcript

from functions.modal_runner import (
    CHUNK_TARGET,
    FanOutBroken,
    ModalCalls,
    ModalRunner,
    StageCalls,
    is_retryable,
)
from functions.local import LocalCalls, in_process
from shared.core.domain import SAMPLE_RATE, Chunk, TranscribeOptions
from shared.media.pcm import ChunkAudio
from shared.pipeline.stages import Stage

# .local() runs outside a container: Modal warns that Volumes are not mounted; the tests know.
pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")


class FakeCalls(StageCalls):
    """Answers `f(item)` per target; `fail` decides, per (target, item, attempt), what to raise."""

    def __init__(self, fns: dict[str, Any], fail=None, *, shuffle: bool = True):
        self.fns = fns
        self.fail = fail or (lambda target, item, attempt: None)
        self.shuffle = shuffle
        self.attempts: dict[tuple[str, Any], int] = {}
        self.log: list[tuple[str, str, Any]] = []  # (kind, target, item)
        self.lock = threading.Lock()

    def _run(self, target: str, item: Any, kwargs: dict) -> Any:
        key = (target, _key(item))
        with self.lock:
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
        exc = self.fail(target, item, attempt)
        if exc is not None:
            raise exc
        return self.fns[target](item, **kwargs)

    def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("call", target, args[0] if args else None))
        return self._run(target, args[0], kwargs)

    def map(self, target: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        self.log.append(("map", target, list(inputs)))
        results: list[Any] = [None] * len(inputs)
        # finish in reverse order: the runner must still yield in input order
        order = range(len(inputs) - 1, -1, -1) if self.shuffle else range(len(inputs))
        for i in order:
            try:
                results[i] = self._run(target, inputs[i], kwargs)
            except Exception as exc:  # noqa: BLE001 - returned like Modal's return_exceptions=True
                results[i] = exc
        return iter(results)


def _key(item: Any) -> Any:
    if isinstance(item, np.ndarray):
        return ("array", item.size)
    if isinstance(item, list):
        return tuple(_key(i) for i in item)
    if isinstance(item, ChunkAudio):
        return ("chunk", item.chunk.index)
    return item


def square_runner(fail=None, **kwargs) -> tuple[ModalRunner, FakeCalls]:
    calls = FakeCalls({target: (lambda x, **kw: x * x) for target in (s.value for s in Stage)}, fail)
    return ModalRunner(calls, threads=4, **kwargs), calls


# --- fan-out and ordering -----------------------------------------------------------------------------


def test_map_yields_in_input_order_from_one_fan_out():
    runner, calls = square_runner()
    assert list(runner.map(Stage.VAD_SPLIT, range(10))) == [i * i for i in range(10)]
    assert [kind for kind, _, _ in calls.log] == ["map"]  # one .map(), not ten calls
    assert calls.log[0][1] == "vad_split"


def test_map_of_nothing_calls_nothing():
    runner, calls = square_runner()
    assert list(runner.map(Stage.TRANSCRIBE, [])) == []
    assert calls.log == []


def test_every_stage_is_a_method_of_the_class_hosting_its_model():
    """Targets are read from the stage interface: each stage's method, named after it, on the deployed
    object hosting its model (the live models on Transcriber instances of their own model)."""
    from types import SimpleNamespace

    from functions.modal_runner import modal_targets
    from shared.pipeline.stages import SPECS, Model

    hosts = {model: SimpleNamespace(**{s.value: (model.value, s.value) for s in Stage}) for model in Model}
    targets = modal_targets(hosts, SimpleNamespace(transcribe="packed"))
    assert targets.pop(CHUNK_TARGET) == "packed"
    assert targets == {stage.value: (spec.model.value, stage.value) for stage, spec in SPECS.items()}
    assert targets["live_partial"] == ("partial_transcriber", "live_partial")


def test_map_forwards_keyword_arguments_to_every_item():
    seen = []
    calls = FakeCalls({"transcribe": lambda b, options: seen.append(options) or len(b)})
    runner = ModalRunner(calls, batch_size=2, dynamic_batching=False)
    opts = TranscribeOptions(language="en")
    assert list(runner.map(Stage.TRANSCRIBE, [[1, 2], [3, 4], [5]], options=opts)) == [2, 2, 1]
    assert seen == [opts, opts, opts]


def test_submit_returns_a_future_per_call_run_concurrently():
    started = threading.Barrier(3)

    def slow(x, **kw):
        started.wait(timeout=5)  # all three must be in flight together
        return x + 1

    calls = FakeCalls({"diarize": slow})
    runner = ModalRunner(calls, threads=8)
    futures = [runner.submit(Stage.DIARIZE, i) for i in range(3)]
    assert all(isinstance(f, Future) for f in futures)
    assert [f.result(timeout=10) for f in futures] == [1, 2, 3]
    runner.close()


def test_detect_language_is_sent_one_chunk_not_the_clip():
    """The pipeline asks for the language of its first chunk: over the wire that is the chunk's own
    samples (a ChunkAudio of in-memory audio pickles only its spans), not the whole recording."""
    import pickle

    sent = []
    calls = FakeCalls({"detect_language": lambda c, **kw: sent.append(pickle.dumps(c)) or "en"})
    runner = ModalRunner(calls)
    hour = np.zeros(SAMPLE_RATE * 120, dtype=np.float32)  # two minutes stand in for an hour
    first = ChunkAudio(Chunk(index=0, start=0.0, end=25.0, keep_start=0.0, keep_end=25.0), hour)
    assert runner.submit(Stage.DETECT_LANGUAGE, first).result() == "en"
    assert list(runner.map(Stage.DETECT_LANGUAGE, [first])) == ["en"]
    assert len(sent) == 2 and all(len(b) < 26 * SAMPLE_RATE * 4 for b in sent)


# --- dynamic batching: where it pays -----------------------------------------------------------------


def _batch(n: int, start: int = 0) -> list[ChunkAudio]:
    return [
        ChunkAudio(Chunk(index=i, start=i, end=i + 1, keep_start=i, keep_end=i + 1), np.zeros(160, np.float32))
        for i in range(start, start + n)
    ]


def test_a_short_clip_goes_chunk_by_chunk_to_the_batched_class():
    calls = FakeCalls(
        {
            CHUNK_TARGET: lambda c, options: ("chunk", c.chunk.index),
            "transcribe": lambda b, options: [("batch", c.chunk.index) for c in b],
        }
    )
    runner = ModalRunner(calls, batch_size=8)
    out = list(runner.map(Stage.TRANSCRIBE, [_batch(3)], options=TranscribeOptions()))
    assert out == [[("chunk", 0), ("chunk", 1), ("chunk", 2)]]  # one batch result, chunks in order
    assert calls.log[0][:2] == ("map", CHUNK_TARGET)


def test_full_batches_go_whole_to_the_plain_class():
    calls = FakeCalls({"transcribe": lambda b, options: [c.chunk.index for c in b]})
    runner = ModalRunner(calls, batch_size=4)
    batches = [_batch(4, 0), _batch(4, 4), _batch(2, 8)]  # a long clip: full batches and a tail
    assert list(runner.map(Stage.TRANSCRIBE, batches, options=TranscribeOptions())) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert [(k, t) for k, t, _ in calls.log] == [("map", "transcribe")]


def test_dynamic_batching_can_be_switched_off():
    calls = FakeCalls({"transcribe": lambda b, options: len(b)})
    runner = ModalRunner(calls, batch_size=8, dynamic_batching=False)
    assert list(runner.map(Stage.TRANSCRIBE, [_batch(2)], options=TranscribeOptions())) == [2]


def test_local_calls_pack_batched_inputs_like_modal():
    """LocalCalls hands a @modal.batched body lists of at most max_batch_size, like Modal does."""
    seen = []

    class Batched:
        def local(self, xs, ys):
            seen.append(len(xs))
            return [x + y for x, y in zip(xs, ys)]

    calls = LocalCalls({"t": Batched()}, batched={"t": 3})
    assert list(calls.map("t", list(range(7)), {"ys": 10})) == [10, 11, 12, 13, 14, 15, 16]
    assert sorted(seen) == [1, 3, 3]
    assert calls.call("t", 5, ys=1) == 6


# --- errors and retries --------------------------------------------------------------------------------


def test_an_input_lost_to_infrastructure_is_sent_again_and_keeps_its_place():
    def fail(target, item, attempt):
        return modal.exception.InternalFailure("container lost") if item == 3 and attempt == 0 else None

    runner, calls = square_runner(fail, retries=1)
    assert list(runner.map(Stage.VAD_SPLIT, range(6))) == [0, 1, 4, 9, 16, 25]
    assert ("call", "vad_split", 3) in calls.log  # item 3 alone, once more


def test_a_bad_input_is_raised_at_once_not_retried():
    def fail(target, item, attempt):
        return ValueError("not audio") if item == 2 else None

    runner, calls = square_runner(fail, retries=3)
    it = runner.map(Stage.VAD_SPLIT, range(5))
    assert next(it) == 0 and next(it) == 1
    with pytest.raises(ValueError, match="not audio") as info:
        next(it)
    assert any("stage vad_split, item 2" in note for note in info.value.__notes__)
    assert calls.attempts[("vad_split", 2)] == 1
    assert not [entry for entry in calls.log if entry[0] == "call"]


def test_retries_are_bounded():
    def fail(target, item, attempt):
        return modal.exception.InternalFailure("again") if item == 1 else None

    runner, calls = square_runner(fail, retries=2)
    with pytest.raises(modal.exception.InternalFailure) as info:
        list(runner.map(Stage.VAD_SPLIT, range(3)))
    assert calls.attempts[("vad_split", 1)] == 3  # the fan-out + 2 re-sends
    assert any("after 2 re-send(s)" in note for note in info.value.__notes__)


def test_no_retries_when_switched_off():
    def fail(target, item, attempt):
        return ConnectionError("reset") if attempt == 0 else None

    runner, _ = square_runner(fail, retries=0)
    with pytest.raises(ConnectionError):
        list(runner.map(Stage.VAD_SPLIT, [1]))


class BreakingCalls(FakeCalls):
    """The first fan-out dies after `after` results (the client lost its connection, say)."""

    def __init__(self, *args, after: int, error: BaseException | None, **kwargs):
        super().__init__(*args, shuffle=False, **kwargs)
        self.after, self.error, self.maps = after, error, 0

    def map(self, target, inputs, kwargs):
        self.maps += 1
        results = list(super().map(target, inputs, kwargs))
        if self.maps > 1:
            return iter(results)

        def broken():
            yield from results[: self.after]
            if self.error is not None:
                raise self.error

        return broken()


@pytest.mark.parametrize("error", [modal.exception.ConnectionError("lost"), None], ids=["raised", "ended-early"])
def test_a_broken_fan_out_is_resumed_where_it_stopped(error):
    calls = BreakingCalls({"vad_split": lambda x, **kw: -x}, after=3, error=error)
    runner = ModalRunner(calls, retries=1)
    assert list(runner.map(Stage.VAD_SPLIT, range(7))) == [0, -1, -2, -3, -4, -5, -6]
    assert [inputs for kind, _, inputs in calls.log if kind == "map"] == [list(range(7)), [3, 4, 5, 6]]


def test_a_fan_out_that_breaks_for_good_raises():
    class AlwaysBreaking(FakeCalls):
        def map(self, target, inputs, kwargs):
            def broken():
                raise modal.exception.ConnectionError("down")
                yield  # pragma: no cover

            return broken()

    runner = ModalRunner(AlwaysBreaking({"vad_split": abs}), retries=2)
    with pytest.raises(modal.exception.ConnectionError):
        list(runner.map(Stage.VAD_SPLIT, [1, 2]))


def test_submit_retries_infrastructure_errors_and_raises_bad_input():
    def fail(target, item, attempt):
        if item == "flaky" and attempt == 0:
            return TimeoutError("slow node")
        if item == "bad":
            return ValueError("bad")
        return None

    calls = FakeCalls({"diarize": lambda x, **kw: x.upper()}, fail)
    runner = ModalRunner(calls, retries=1)
    assert runner.submit(Stage.DIARIZE, "flaky").result() == "FLAKY"
    with pytest.raises(ValueError) as info:
        runner.submit(Stage.DIARIZE, "bad").result()
    assert any("stage diarize" in note for note in info.value.__notes__)


def test_which_errors_are_retried():
    assert is_retryable(modal.exception.InternalFailure("x"))
    assert is_retryable(modal.exception.FunctionTimeoutError("x"))
    assert is_retryable(ConnectionError())
    assert is_retryable(FanOutBroken())
    assert not is_retryable(ValueError())
    assert not is_retryable(modal.exception.InvalidError("x"))


def test_closing_stops_the_runner_threads():
    runner, _ = square_runner()
    runner.close()
    with pytest.raises(RuntimeError):
        runner.submit(Stage.VAD_SPLIT, 2)


# --- the Modal calls themselves --------------------------------------------------------------------------


class RecordingFunction:
    """Stands in for a hydrated Modal method: records how .remote/.map are called."""

    def __init__(self):
        self.calls = []

    def remote(self, *args, **kwargs):
        self.calls.append(("remote", args, kwargs))
        return "remote-result"

    def map(self, *iterables, **kwargs):
        self.calls.append(("map", tuple(list(i) for i in iterables), kwargs))
        return iter(["a", ValueError("b")])


def test_modal_calls_use_remote_and_an_ordered_map_that_returns_exceptions():
    fn = RecordingFunction()
    calls = ModalCalls({"vad_split": fn})
    assert calls.call("vad_split", 1, x=2) == "remote-result"
    out = list(calls.map("vad_split", [1, 2], {"options": "o"}))
    assert out[0] == "a" and isinstance(out[1], ValueError)
    assert fn.calls == [
        ("remote", (1,), {"x": 2}),
        ("map", ([1, 2],), {"kwargs": {"options": "o"}, "order_outputs": True, "return_exceptions": True}),
    ]
    with pytest.raises(ValueError, match="no Modal function"):
        calls.call("nope")


# --- the same pipeline through the real decorated methods (.local) ---------------------------------------


@pytest.mark.slow
def test_the_pipeline_through_modal_functions_matches_the_in_process_runner(monkeypatch):
    """Same audio, same pipeline code: the ModalRunner over the decorated classes (.local) and the
    in-process runner over the shared classes give the same transcript."""
    from audio_fixtures import TWO_SPEAKERS

    from functions import app as modal_app
    from shared.media.decode import decode
    from shared.core.config import Settings
    from shared.core.domain import SpeakerHints
    from shared.pipeline.flow import transcribe
    from shared.pipeline.runner import InProcessRunner
    from shared.pipeline.models import StageWorker

    monkeypatch.setenv("MAX_CHUNK_S", "8")  # several chunks, so TRANSCRIBE really fans out
    samples = decode(TWO_SPEAKERS).samples
    options = TranscribeOptions(speakers=SpeakerHints(num_speakers=2), word_timestamps=True)

    fanned: list[tuple[str, int]] = []

    class RecordingLocalCalls(LocalCalls):
        def map(self, target, inputs, kwargs):
            fanned.append((target, len(inputs)))
            return super().map(target, inputs, kwargs)

    with in_process():
        calls = RecordingLocalCalls(modal_app.stage_targets(), batched={CHUNK_TARGET: 16})
        modal_runner = ModalRunner(calls, batch_size=2)
        via_modal = transcribe(samples, options, modal_runner, batch_size=2)
    assert fanned and fanned[0][0] == "transcribe" and fanned[0][1] >= 2, fanned

    settings = Settings()
    with InProcessRunner(StageWorker(settings)) as local_runner:
        here = transcribe(samples, options, local_runner, batch_size=2)

    assert len(via_modal.segments) > 2, via_modal
    assert_same_transcript(via_modal, here)  # other model instances, maybe other thread layouts
    assert len(via_modal.speakers) == 2
