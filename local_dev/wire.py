"""What the pool and its workers say to each other, and how they connect.

A connection is multiprocessing.connection over TCP, HMAC-authenticated with the pool's key; each
message is one pickled object of the classes below (both ends run this same module).

    worker -> pool: Hello, then Ready or Fatal, then Done / Failed per Run
    pool -> worker: Init (after Hello), then Run ..., Stop
"""

from __future__ import annotations

import pickle
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

# --------------------------------------------------------------------------- worker -> pool


@dataclass(frozen=True)
class Hello:
    worker_id: int
    info: dict[str, Any]  # pid, host, what the worker sees (role, device, gpu_index ... for external ones)


@dataclass(frozen=True)
class Ready:
    info: dict[str, Any]  # load_seconds, cuda_devices


@dataclass(frozen=True)
class Fatal:
    error: str  # the traceback of a failed load; the worker exits after it


@dataclass(frozen=True)
class Done:
    job: int
    result: Any
    seconds: float


@dataclass(frozen=True)
class Failed:
    job: int
    error: BaseException
    traceback: str
    seconds: float


# --------------------------------------------------------------------------- pool -> worker


@dataclass(frozen=True)
class Init:
    settings: Any  # shared.core.config.Settings for this worker (its device, its share of the cores)
    stages: tuple[str, ...]
    preload: bool
    factory: str | None  # "module:callable" that builds the stage runner; None: StageWorker


@dataclass(frozen=True)
class Run:
    job: int
    stage: str
    args: tuple
    kwargs: dict


@dataclass(frozen=True)
class Stop:
    """An orderly stop: drop queued calls, let a running one end, exit."""


# --------------------------------------------------------------------------- connections


def listen(host: str, port: int, authkey: bytes) -> Listener:
    return Listener((host, port), backlog=16, authkey=authkey)


def connect(address: tuple[str, int], authkey: bytes, timeout: float) -> Connection:
    """Connect to the pool, retrying while it is not listening yet (a container may start first)."""
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


def wake(address: tuple[str, int]) -> None:
    """Connect once and hang up, so a thread blocked in Listener.accept() returns."""
    try:
        socket.create_connection(address, timeout=1).close()
    except OSError:
        pass


def encode_reply(message: Done | Failed) -> bytes:
    """The pickled reply; one that cannot be pickled (a lambda for a result, say) becomes a Failed."""
    try:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
        failed = Failed(message.job, RuntimeError(f"unpicklable reply: {exc!r}"), "", message.seconds)
        return pickle.dumps(failed, protocol=pickle.HIGHEST_PROTOCOL)


def portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives a pickle round trip, else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
