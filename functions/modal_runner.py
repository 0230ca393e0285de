"""The Runner port on Modal: each stage is a call to a deployed GPU/CPU function, fanned out with .map().

The pipeline (shared/pipeline/flow.py) is the same code that runs locally; only the Runner differs. This
adapter turns `submit(stage, ...)` into one remote call on a thread (a Future), and `map(stage, items)`
into one Modal `.map()` whose results come back in input order.

Everything that touches Modal goes through `StageCalls`, the seam:
- `ModalCalls` calls deployed methods with `.remote()` / `.map()`;
- `functions/local.py`'s `LocalCalls` calls the very same decorated methods with `.local()` in this process
  (tests, offline);
- tests add doubles that fail on purpose to cover the error and retry paths.

Errors: Modal already re-runs a failed input `retries` times inside the function (functions/settings.py).
What reaches the runner is either the function's own exception (bad input: raised at once, in order,
with a note naming the stage and item), or an infrastructure failure (a lost container, a dropped
connection): those inputs are sent again, up to `runner_retries` times, before the error is raised.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.core.config import auto_batch_size
from shared.core.domain import ChunkTranscript, TranscribeOptions
from shared.media.pcm import ChunkAudio
from shared.pipeline.cancel import CancelToken
from shared.pipeline.runner import Runner
from shared.pipeline.stages import SPECS, Model, Stage

log = logging.getLogger(__name__)



def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import modal.exception as me

        errors += [me.InternalFailure, me.ConnectionError, me.FunctionTimeoutError, me.InternalError]
    except ImportError:  # pragma: no cover - modal is a dev dependency
        pass
    return tuple(errors)


INFRASTRUCTURE_ERRORS = _infrastructure_errors()


class FanOutBroken(RuntimeError):
    """A `.map()` stream ended before every input had a result."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (*INFRASTRUCTURE_ERRORS, FanOutBroken))


# --- the seam ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One stage call: positional arguments and keyword arguments."""

    args: tuple
    kwargs: dict


class StageCalls(ABC):
    """How a stage reaches the function that runs it. `map` returns exceptions in place of results."""

    @abstractmethod
    def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """Run one call and return its result (or raise)."""

    @abstractmethod
    def map(self, target: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        """Run `target(item, **kwargs)` for each item; yield results (or exceptions) in input order."""


class MethodCalls(StageCalls):
    """Calls named methods of Modal objects; `targets` maps a target name to a Modal Function/method."""

    def __init__(self, targets: dict[str, Any]):
        self.targets = targets

    def _fn(self, target: str) -> Any:
        try:
            return self.targets[target]
        except KeyError:
            raise ValueError(f"no Modal function for {target!r}") from None


class ModalCalls(MethodCalls):
    """Deployed functions: `.remote()` for one call, `.map()` for a fan-out (ordered, exceptions returned)."""

    def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        return self._fn(target).remote(*args, **kwargs)

    def map(self, target: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        return iter(self._fn(target).map(inputs, kwargs=kwargs, order_outputs=True, return_exceptions=True))


# --- the runner ---------------------------------------------------------------------------------------

# A stage's target is its name (`stage.value`); TRANSCRIBE has a second one: single chunks on the
# dynamically batched class.
CHUNK_TARGET = "transcribe.chunks"


class ModalRunner(Runner):
    """Runner adapter for Modal. `dynamic_batching`: a TRANSCRIBE map that is one partial batch (a short
    clip: fewer chunks than a batch) sends its chunks one by one to the @modal.batched class, where Modal
    packs them with chunks of other requests into one GPU batch; full batches go to the plain class."""

    def __init__(
        self,
        calls: StageCalls,
        *,
        threads: int = 32,
        retries: int = 1,
        batch_size: int = auto_batch_size("cuda", billed_gpu=True),
        dynamic_batching: bool = True,
    ):
        self.calls = calls
        self.retries = retries
        self.batch_size = batch_size
        self.dynamic_batching = dynamic_batching
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="modal-runner")
        self._closed = threading.Event()

    @classmethod
    def from_settings(cls, calls: StageCalls, settings) -> "ModalRunner":
        return cls(
            calls,
            threads=settings.runner_threads,
            retries=settings.runner_retries,
            batch_size=settings.transcribe_batch_size,
        )

    # -- Runner port --

    def _submit(self, stage: Stage, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(self._call, stage.value, stage, Call(args, kwargs))

    def _map(
        self, stage: Stage, items: Iterable[Any], *, cancel: CancelToken | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        items = list(items)
        if not items:
            return iter(())
        if stage is Stage.TRANSCRIBE and self._use_dynamic_batching(items):
            results = self._map_chunks(items, kwargs)
        else:
            results = self._ordered(stage.value, stage, items, kwargs)
        return results if cancel is None else _checked(results, cancel)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals --

    def _use_dynamic_batching(self, batches: list[Any]) -> bool:
        return self.dynamic_batching and len(batches) == 1 and len(batches[0]) < self.batch_size

    def _map_chunks(self, batches: list[list[Any]], kwargs: dict[str, Any]) -> Iterator[Any]:
        """One partial batch -> single-chunk calls on the batched class -> the batch's results, in order."""
        (batch,) = batches
        options = kwargs.get("options")
        chunks_out = list(self._ordered(CHUNK_TARGET, Stage.TRANSCRIBE, list(batch), {"options": options}))
        yield chunks_out

    def _call(self, target: str, stage: Stage, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                return self.calls.call(target, *call.args, **call.kwargs)
            except BaseException as exc:  # noqa: BLE001 - classified below
                if not is_retryable(exc) or attempt >= self.retries or self._closed.is_set():
                    _note(exc, stage, None, attempt)
                    raise
                attempt += 1
                log.warning("%s: %s, sending again (%d/%d)", stage.value, type(exc).__name__, attempt, self.retries)

    def _ordered(self, target: str, stage: Stage, items: list[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        """Yield results in input order as they arrive. A failed item is sent again on its own; if the
        fan-out itself breaks, what is left is fanned out again (each costs one attempt)."""
        start = 0
        attempts_left = self.retries
        while start < len(items):
            stream = self.calls.map(target, items[start:], kwargs)
            broke: BaseException | None = None
            for offset in range(len(items) - start):
                index = start + offset
                try:
                    result = next(stream)
                except StopIteration:
                    broke = FanOutBroken(f"{stage.value}: the fan-out ended after {offset} of {len(items) - start}")
                    break
                except BaseException as exc:  # noqa: BLE001 - the map itself failed
                    broke = exc
                    break
                if isinstance(result, BaseException):
                    result = self._recover(target, stage, index, items[index], kwargs, result)
                yield result
            else:
                return
            start += offset
            if not is_retryable(broke) or attempts_left <= 0:
                _note(broke, stage, start, self.retries - attempts_left)
                raise broke
            attempts_left -= 1
            log.warning("%s: fan-out broke at item %d (%s), fanning out the rest again", stage.value, start, broke)

    def _recover(self, target: str, stage: Stage, index: int, item: Any, kwargs: dict[str, Any], exc: BaseException):
        attempt = 0
        while is_retryable(exc) and attempt < self.retries and not self._closed.is_set():
            attempt += 1
            log.warning("%s item %d: %s, sending again (%d/%d)", stage.value, index, type(exc).__name__, attempt, self.retries)
            try:
                return self.calls.call(target, item, **kwargs)
            except BaseException as again:  # noqa: BLE001
                exc = again
        _note(exc, stage, index, attempt)
        raise exc


def _checked(results: Iterator[Any], cancel: CancelToken) -> Iterator[Any]:
    """Modal's fan-out streams results back; a cancelled run stops between them and closes the stream."""
    try:
        for result in results:
            cancel.check()
            yield result
    finally:
        close = getattr(results, "close", None)
        if close:
            close()


def _note(exc: BaseException, stage: Stage, index: int | None, retried: int) -> None:
    where = f"stage {stage.value}" + (f", item {index}" if index is not None else "")
    if retried:
        where += f", after {retried} re-send(s)"
    try:
        exc.add_note(f"whospoke modal runner: {where}")
    except AttributeError:  # pragma: no cover - every exception has add_note on 3.11+
        pass


def modal_targets(hosts: Mapping[Model, Any], chunk_transcriber: Any) -> dict[str, Callable]:
    """Target name -> the Modal method that serves it: each stage's method (named after the stage) on the
    deployed object that hosts the stage's model (`hosts`, read from the interface's SPECS), and the
    @modal.batched chunk path."""
    targets = {stage.value: getattr(hosts[spec.model], stage.value) for stage, spec in SPECS.items()}
    return {**targets, CHUNK_TARGET: chunk_transcriber.transcribe}


def transcribe_packed(whisper, chunks: list[ChunkAudio], options: list[TranscribeOptions], batch_size: int):
    """The body of CHUNK_TARGET (functions/app.py's ChunkTranscriber): chunks that Modal's @modal.batched
    packed from different requests. Each group of equal options is one batched pass.
    A chunk without a language gets its own detection (one batch shares one language)."""
    options = [
        o if o.language is not None else o.model_copy(update={"language": whisper.detect_language(c)})
        for c, o in zip(chunks, options)
    ]
    groups: dict[str, list[int]] = {}
    for i, o in enumerate(options):
        groups.setdefault(o.model_dump_json(), []).append(i)
    results: list[ChunkTranscript | None] = [None] * len(chunks)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            part = indices[start : start + batch_size]
            for i, result in zip(part, whisper.transcribe_batch([chunks[i] for i in part], options[part[0]])):
                results[i] = result
    return results
