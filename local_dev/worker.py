"""The worker process: one StageWorker next to one device, fed stage calls over a connection.

The same entry point runs as a spawned local process (`spawn_main`) and inside a Docker container
(`python -m local_dev worker --connect HOST:PORT --id N`). It connects to the pool's listener
(multiprocessing.connection over TCP, HMAC-authenticated with the pool's key), says hello, receives its
settings, loads its models, and then runs calls until the connection closes.

Messages, worker -> pool: ("hello", id, info), ("ready", info), ("fatal", text),
("ok", job, result, seconds), ("err", job, exception, traceback_text, seconds).
Pool -> worker: ("init", settings, stages, preload, factory), ("run", job, stage, args, kwargs), ("stop",).

Nothing CUDA is imported here at module level: the device is pinned (CUDA_VISIBLE_DEVICES) first.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DEFAULT_FACTORY = "shared.stages:StageWorker"


def spawn_main(address: tuple[str, int], authkey: bytes, worker_id: int, env: dict[str, str]) -> None:
    """Target of the multiprocessing 'spawn' process. The pool also sets `env` around the spawn itself,
    so the variables hold from the interpreter's first instruction; this repeats it for safety."""
    os.environ.update(env)
    serve(address, authkey, worker_id, info={"launcher": "process"})


def connect(address: tuple[str, int], authkey: bytes, timeout: float):
    """Connect to the pool, retrying while it is not listening yet (a container may start first)."""
    from multiprocessing.connection import Client

    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return Client(address, authkey=authkey)
        except (ConnectionRefusedError, socket.gaierror, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def serve(
    address: tuple[str, int],
    authkey: bytes,
    worker_id: int,
    *,
    info: dict[str, Any] | None = None,
    connect_timeout: float = 60.0,
) -> None:
    conn = connect(address, authkey, connect_timeout)
    hello = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **(info or {}),
    }
    conn.send(("hello", worker_id, hello))
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return
    if msg[0] != "init":
        return
    _, settings, stages, preload, factory = msg
    try:
        worker = _load_factory(factory or DEFAULT_FACTORY)(settings)
        started = time.perf_counter()
        if preload:
            from shared.stages import Stage

            worker.load(tuple(Stage(s) for s in stages))
        ready = {"load_seconds": time.perf_counter() - started, **_device_check(settings)}
    except BaseException:  # noqa: BLE001 - report any load failure, then exit
        conn.send(("fatal", traceback.format_exc()))
        conn.close()
        return
    conn.send(("ready", ready))
    _run_loop(conn, worker)


def _run_loop(conn, worker) -> None:
    """Receive calls and run them on per-stage threads, so a long diarization does not hold up the
    transcription batches behind it (as InProcessRunner: TRANSCRIBE_WORKERS threads for transcription,
    one for diarization, two for the light stages)."""
    send_lock = threading.Lock()
    settings = getattr(worker, "settings", None)
    threads = {"transcribe": getattr(settings, "resolved_transcribe_workers", 1), "diarize": 1}
    pools: dict[str, ThreadPoolExecutor] = {}

    def pool_for(stage: str) -> ThreadPoolExecutor:
        if stage not in pools:
            pools[stage] = ThreadPoolExecutor(threads.get(stage, 2), thread_name_prefix=f"w-{stage}")
        return pools[stage]

    def reply(message: tuple) -> None:
        try:
            payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            job, seconds = message[1], message[-1]
            payload = pickle.dumps(("err", job, RuntimeError(f"unpicklable reply: {exc!r}"), "", seconds))
        with send_lock:
            try:
                conn.send_bytes(payload)
            except OSError:
                pass  # the pool is gone; the receive loop ends too

    def call(job: int, stage: str, args: tuple, kwargs: dict) -> None:
        started = time.perf_counter()
        try:
            result = worker.run(stage, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply(("err", job, _portable(exc), traceback.format_exc(), time.perf_counter() - started))
            return
        reply(("ok", job, result, time.perf_counter() - started))

    try:
        while True:
            msg = conn.recv()
            if msg[0] == "run":
                _, job, stage, args, kwargs = msg
                pool_for(str(getattr(stage, "value", stage))).submit(call, job, stage, args, kwargs)
            elif msg[0] == "stop":
                # An orderly stop: drop queued calls, let a running one end, exit normally.
                for pool in pools.values():
                    pool.shutdown(wait=True, cancel_futures=True)
                conn.close()
                return
    except (EOFError, OSError):
        pass  # the pool closed the connection or died
    # The pool is gone: do not wait for a model call still running, nobody will read its result.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives a pickle round trip, else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _load_factory(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _device_check(settings) -> dict[str, Any]:
    """What the worker really sees, reported to the pool (GPU workers should see exactly one GPU)."""
    if getattr(settings, "device", "cpu") != "cuda":
        return {"cuda_devices": 0}
    try:
        import ctranslate2

        return {"cuda_devices": ctranslate2.get_cuda_device_count()}
    except Exception:  # noqa: BLE001
        return {"cuda_devices": None}
