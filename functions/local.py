"""The deployment in this process: every Modal method and function body through `.local()`, without a
Modal account or a network. For the tests and tests/modal_local_serve.py; the deployed app never imports
this module (functions/app.py has no test wiring: this adapter points it at local stand-ins instead).

While `in_process()` is open (or after `install()`, until its undo):
- stage calls go through `LocalCalls`: the very methods of the deployed classes, with `.local()` (whose
  first call on an object runs its @modal.enter hooks, as a container would), a thread pool standing in
  for Modal's containers;
- the Volumes are this machine's disk (`LocalVolume`: nothing to commit, nothing to reload);
- the web endpoint runs as configured (a deployed one always requires API keys).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from functions import app as modal_app
from functions.modal_runner import CHUNK_TARGET, MethodCalls, ModalRunner


class LocalCalls(MethodCalls):
    """The same decorated functions run in this process through `.local()`, with a thread pool standing
    in for Modal's containers. `batched` names the @modal.batched targets (with their max_batch_size):
    their bodies take lists, which Modal would pack from single calls."""

    def __init__(self, targets: dict[str, Any], *, batched: dict[str, int] | None = None, threads: int = 4):
        super().__init__(targets)
        self.batched = dict(batched or {})
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="modal-local")
        self._first = {name: threading.Lock() for name in targets}  # one model load per object
        self._warm: set[str] = set()

    def _local(self, target: str, *args: Any, **kwargs: Any) -> Any:
        fn = self._fn(target)
        if target in self._warm:
            return fn.local(*args, **kwargs)
        with self._first[target]:
            result = fn.local(*args, **kwargs)
            self._warm.add(target)
            return result

    def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        if target in self.batched:
            (result,) = self._local(target, *([a] for a in args), **{k: [v] for k, v in kwargs.items()})
            return result
        return self._local(target, *args, **kwargs)

    def map(self, target: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[Any]:
        if target in self.batched:  # as Modal would: up to max_batch_size inputs per call
            size = self.batched[target]
            groups = [list(inputs[i : i + size]) for i in range(0, len(inputs), size)]
            futures = [
                self._pool.submit(self._local, target, group, **{k: [v] * len(group) for k, v in kwargs.items()})
                for group in groups
            ]
            for future, group in zip(futures, groups):
                exc = future.exception()
                yield from ([exc] * len(group) if exc is not None else future.result())
            return
        futures = [self._pool.submit(self._local, target, item, **kwargs) for item in inputs]
        for future in futures:
            exc = future.exception()
            yield exc if exc is not None else future.result()


class LocalVolume:
    """A Volume whose path is this machine's disk: what is written is there, nothing to commit or reload."""

    def commit(self) -> None:
        pass

    def reload(self) -> None:
        pass


def local_calls() -> LocalCalls:
    """Every stage target (and the @modal.batched chunk path) through `.local()`."""
    return LocalCalls(modal_app.stage_targets(), batched={CHUNK_TARGET: modal_app.settings.dynamic_batch_max})


def local_runner() -> ModalRunner:
    """functions/app.py's runner, its stage calls through `.local()`."""
    return ModalRunner.from_settings(local_calls(), modal_app.settings)


def install() -> Callable[[], None]:
    """Point functions/app.py's bodies at the local stand-ins; returns the undo."""
    stand_ins = {
        "build_runner": local_runner,
        "models_volume": LocalVolume(),
        "data_volume": LocalVolume(),
        "web_settings": lambda s: s,  # served here it runs as configured
    }
    saved = {name: getattr(modal_app, name) for name in stand_ins}
    for name, value in stand_ins.items():
        setattr(modal_app, name, value)

    def undo() -> None:
        for name, value in saved.items():
            setattr(modal_app, name, value)

    return undo


@contextmanager
def in_process() -> Iterator[None]:
    """This process as the deployment, for the `with` block."""
    undo = install()
    try:
        yield
    finally:
        undo()
