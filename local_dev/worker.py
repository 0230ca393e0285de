"""The worker process: one StageWorker next to one device, fed stage calls over a connection.

The same entry point runs as a spawned local process (`spawn_main`) and inside a Docker container
(`python -m local_dev worker --connect HOST:PORT --id N`). It connects to the pool's listener
(multiprocessing.connection over TCP, HMAC-authenticated with the pool's key), says hello, receives its
settings, loads its models, and then runs calls until the connection closes. The messages are
local_dev/wire.py's.

Nothing CUDA is imported here at module level: the device is pinned (CUDA_VISIBLE_DEVICES) first.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from local_dev import wire
from shared.pipeline.stages import Stage

DEFAULT_FACTORY = "shared.pipeline.models:StageWorker"


def spawn_main(address: tuple[str, int], authkey: bytes, worker_id: int, env: dict[str, str]) -> None:
    """Target of the multiprocessing 'spawn' process. The pool also sets `env` around the spawn itself,
    so the variables hold from the interpreter's first instruction; this repeats it for safety."""
    os.environ.update(env)
    serve(address, authkey, worker_id, info={"launcher": "process"})


def serve(
    address: tuple[str, int],
    authkey: bytes,
    worker_id: int,
    *,
    info: dict[str, Any] | None = None,
    connect_timeout: float = 60.0,
) -> None:
    conn = wire.connect(address, authkey, connect_timeout)
    hello = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **(info or {}),
    }
    conn.send(wire.Hello(worker_id, hello))
    try:
        init = conn.recv()
    except (EOFError, OSError):
        return
    if not isinstance(init, wire.Init):
        return
    try:
        worker = _load_factory(init.factory or DEFAULT_FACTORY)(init.settings)
        started = time.perf_counter()
        if init.preload:

            worker.load(tuple(Stage(s) for s in init.stages))
        ready = {"load_seconds": time.perf_counter() - started, **_device_check(init.settings)}
    except BaseException:  # noqa: BLE001 - report any load failure, then exit
        conn.send(wire.Fatal(traceback.format_exc()))
        conn.close()
        return
    conn.send(wire.Ready(ready))
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

    def reply(message: wire.Done | wire.Failed) -> None:
        payload = wire.encode_reply(message)
        with send_lock:
            try:
                conn.send_bytes(payload)
            except OSError:
                pass  # the pool is gone; the receive loop ends too

    def call(run: wire.Run) -> None:
        started = time.perf_counter()
        try:
            result = worker.run(run.stage, *run.args, **run.kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply(wire.Failed(run.job, wire.portable(exc), traceback.format_exc(), time.perf_counter() - started))
            return
        reply(wire.Done(run.job, result, time.perf_counter() - started))

    try:
        while True:
            msg = conn.recv()
            if isinstance(msg, wire.Run):
                pool_for(msg.stage).submit(call, msg)
            elif isinstance(msg, wire.Stop):
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
