"""LiveModels' scheduling on its own, with a runner whose calls finish when the test says: live finals
(and the voice embeddings they wait for) go first, a partial batch waits while one is pending and goes
when it is done, and partials are not starved by finals that keep coming (shared/live/models.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np

from shared.core.domain import SAMPLE_RATE, TranscribeOptions
from shared.live.models import LiveModels
from shared.pipeline.runner import Runner
from shared.pipeline.stages import Stage

OPTIONS = TranscribeOptions(diarize=False)
AUDIO = np.zeros(SAMPLE_RATE, np.float32)


class ManualRunner(Runner):
    """Records each call; a call's Future is finished by `finish`."""

    def __init__(self):
        self.calls: list[tuple[Stage, tuple, Future]] = []
        self._lock = threading.Lock()

    def _submit(self, stage, *args, **kwargs):
        future: Future = Future()
        with self._lock:
            self.calls.append((stage, args, future))
        return future

    def of(self, stage: Stage) -> list[tuple[tuple, Future]]:
        with self._lock:
            return [(args, f) for s, args, f in self.calls if s == stage]

    def finish(self, stage: Stage, index: int = -1) -> None:
        args, future = self.of(stage)[index]
        future.set_result([f"{stage.value} result"] * len(args[0]))


def test_a_partial_batch_waits_for_a_pending_final_and_goes_when_it_is_done():
    runner = ManualRunner()
    models = LiveModels(runner, partial_max_wait_s=60)
    assert models.partial("idle", AUDIO, OPTIONS) and len(runner.of(Stage.LIVE_PARTIAL)) == 1  # none pending: at once
    runner.finish(Stage.LIVE_PARTIAL)

    final = models.final(AUDIO, OPTIONS)
    voice = models.embed(AUDIO)
    a = models.partial("a", AUDIO, OPTIONS)
    b = models.partial("b", AUDIO, OPTIONS)
    assert len(runner.of(Stage.LIVE_PARTIAL)) == 1 and not a.done()  # held back behind the final
    runner.finish(Stage.LIVE_FINAL)
    assert final.result(1) == "live_final result"
    assert len(runner.of(Stage.LIVE_PARTIAL)) == 1  # the voice embedding the final waits for is pending
    runner.finish(Stage.EMBED_VOICE)
    assert voice.result(1) == "embed_voice result"
    batches = runner.of(Stage.LIVE_PARTIAL)
    assert len(batches) == 2 and len(batches[1][0][0]) == 2  # both waiting sessions, one batch
    runner.finish(Stage.LIVE_PARTIAL)
    assert a.result(1) == b.result(1) == "live_partial result"
    assert models.partial_batches_held == 1 and models.partial_batches_forced == 0
    assert models._timer is None  # the wait's timer went with the batch


def test_background_finals_and_window_embeddings_hold_no_partial_back():
    runner = ManualRunner()
    models = LiveModels(runner, partial_max_wait_s=60)
    models.final(AUDIO, OPTIONS, background=True)
    models.embed(AUDIO, background=True)
    models.windows(AUDIO)
    models.partial("a", AUDIO, OPTIONS)
    assert len(runner.of(Stage.LIVE_PARTIAL)) == 1 and models.partial_batches_held == 0


def test_a_runner_that_refuses_a_final_leaves_nothing_pending():
    class Refusing(ManualRunner):
        def _submit(self, stage, *args, **kwargs):
            if stage == Stage.LIVE_FINAL:
                raise RuntimeError("no workers")
            return super()._submit(stage, *args, **kwargs)

    runner = Refusing()
    models = LiveModels(runner, partial_max_wait_s=60)
    try:
        models.final(AUDIO, OPTIONS)
    except RuntimeError:
        pass
    models.partial("a", AUDIO, OPTIONS)
    assert len(runner.of(Stage.LIVE_PARTIAL)) == 1


def test_partials_are_not_starved_by_finals_that_keep_coming():
    """A final always pending (a new one before the last is done): the waiting partials go once they have
    waited partial_max_wait_s, without any other call to wake them, and again after the next wait."""
    runner = ManualRunner()
    wait = 0.3
    models = LiveModels(runner, partial_max_wait_s=wait)
    models.final(AUDIO, OPTIONS)
    started = time.monotonic()
    a = models.partial("a", AUDIO, OPTIONS)
    sent: list[float] = []
    deadline = started + 10
    while len(sent) < 2 and time.monotonic() < deadline:
        models.final(AUDIO, OPTIONS)  # the next final arrives before the last one is done
        runner.finish(Stage.LIVE_FINAL, index=-2)
        if len(runner.of(Stage.LIVE_PARTIAL)) > len(sent):
            sent.append(time.monotonic())
            runner.finish(Stage.LIVE_PARTIAL)
            models.partial("a", AUDIO, OPTIONS)  # the session's next partial, at once
        time.sleep(0.02)
    assert a.result(1) == "live_partial result"
    assert len(sent) == 2, "partials starved behind finals"
    assert wait <= sent[0] - started < wait + 2 and wait <= sent[1] - sent[0] < wait + 2
    assert models.partial_batches_forced == 2


def test_a_held_partial_goes_on_its_own_when_the_wait_is_over():
    """No final finishes and no partial arrives: the timer alone lets the batch go."""
    runner = ManualRunner()
    models = LiveModels(runner, partial_max_wait_s=0.2)
    models.final(AUDIO, OPTIONS)
    models.partial("a", AUDIO, OPTIONS)
    assert not runner.of(Stage.LIVE_PARTIAL)
    deadline = time.monotonic() + 5
    while not runner.of(Stage.LIVE_PARTIAL) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runner.of(Stage.LIVE_PARTIAL)) == 1 and models._timer is None
