"""Stand-ins for the Modal services the deployment uses, so its code runs here without an account or a
network: `MemoryDict` for modal.Dict, `LocalSpawn` for `.spawn()`, and `local_deployment()`, which makes
this process the whole deployment (functions/app.py's job worker over a MemoryDict, spawning with
`.local()` on threads, stage calls through the deployed classes with `.local()`: functions/local.py).
"""

from __future__ import annotations

import logging
import pickle
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_MISSING = object()


class MemoryDict:
    """An in-memory stand-in for modal.Dict, for tests and tests/modal_local_serve.py: the real
    one is a Modal service, which cannot run without an account and a network.

    It has exactly the methods DictJobStore uses, with the semantics modal 1.6.4 documents for them:
    values are serialized on the way in and out (a changed object is not changed in the Dict until it
    is put again), `put(skip_if_exists=True)` is an atomic create-if-absent that answers whether it
    created the key, `pop` without a default raises KeyError, and `keys()` comes back in no particular
    order (shuffled here, so nothing can come to depend on an order). `jitter_s` sleeps a random time
    before each call, to make concurrent callers interleave in tests.
    """

    def __init__(self, *, jitter_s: float = 0.0):
        self.jitter_s = jitter_s
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def _pause(self) -> None:
        if self.jitter_s:
            time.sleep(random.uniform(0, self.jitter_s))

    def get(self, key: Any, default: Any = None) -> Any:
        self._pause()
        with self._lock:
            raw = self._data.get(pickle.dumps(key))
        return default if raw is None else pickle.loads(raw)

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        k, v = pickle.dumps(key), pickle.dumps(value)
        self._pause()
        with self._lock:
            if skip_if_exists and k in self._data:
                return False
            self._data[k] = v
            return True

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        self._pause()
        with self._lock:
            raw = self._data.pop(pickle.dumps(key), None)
        if raw is None:
            if default is _MISSING:
                raise KeyError(f"{key} not in dict")
            return default
        return pickle.loads(raw)

    def keys(self) -> Iterator[Any]:
        self._pause()
        with self._lock:
            keys = [pickle.loads(k) for k in self._data]
        random.shuffle(keys)
        return iter(keys)

    def __len__(self) -> int:  # for tests; DictJobStore does not use it
        with self._lock:
            return len(self._data)


class LocalSpawn:
    """Test double for `.spawn()`: the same function body, called with `.local()` on a thread of this
    process (what tests and tests/modal_local_serve.py use; no Modal account needed)."""

    def __init__(self, fn: Any):
        self.fn = fn
        self.calls: list[tuple] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        thread = threading.Thread(target=self._run, args=args, daemon=True, name="local-spawn")
        self.threads.append(thread)
        thread.start()

    def _run(self, *args: Any) -> None:
        try:
            self.fn.local(*args)
        except BaseException as exc:  # noqa: BLE001 - a spawned call's failure is only logged, as on Modal
            self.errors.append(exc)
            log.exception("spawned call %s%r failed", getattr(self.fn, "__name__", self.fn), args)

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))


class LocalDeployment:
    """This process as the whole deployment: functions/app.py's job worker over a MemoryDict, spawning
    run_job and deliver_webhook with `.local()` on threads, its stage calls through `.local()` too
    (functions/local.py, installed until `close()`). `build()` again after changing the environment: a
    new worker, the same Dict."""

    def __init__(self):
        self.dict = MemoryDict()
        self.worker = None
        self._undo = None

    def build(self):
        from functions import app as modal_app
        from functions.local import install

        if self._undo is None:
            self._undo = install()
        self.worker = modal_app.build_jobs_worker(self.dict, LocalSpawn, None)
        modal_app._jobs = self.worker  # what jobs_worker() now returns in this process
        return self.worker

    def close(self, timeout: float = 120.0) -> None:
        from functions import app as modal_app

        if self.worker is not None:
            for spawn in (self.worker.spawn_run, self.worker.spawn_deliver):
                if isinstance(spawn, LocalSpawn):
                    spawn.join(timeout)
        modal_app._jobs = None
        if self._undo is not None:
            self._undo()
            self._undo = None
