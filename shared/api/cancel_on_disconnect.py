"""Synchronous transcriptions stop when their client goes away.

POST /api/transcribe and POST /v1/audio/* answer once the transcript is done, and the work holds one of
the server's worker threads (anyio's pool, 40 of them) all along. When the client disconnects, nobody
waits for that answer any more: run_until_disconnected watches the connection (the ASGI
`http.disconnect` message) while the work runs on its thread, and when it comes, cancels the run's
CancelToken (shared/pipeline/cancel.py). The pipeline stops at once if it is waiting on a stage call,
else at its next stage or batch boundary, and the stage calls it had queued are cancelled; the thread
is back in the pool when that happens. The route then answers 499 client_disconnected, which only the
logs and the metrics see: whospoke_transcriptions_cancelled_total{route} counts these.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from shared.core.errors import ClientDisconnected
from shared.pipeline.cancel import Cancelled, CancelToken

log = logging.getLogger(__name__)
T = TypeVar("T")

# process-wide like the other counters (shared/api/ops.py registers it in each app's registry)
CANCELLED = Counter(
    "whospoke_transcriptions_cancelled",
    "synchronous transcriptions stopped because their client disconnected",
    ["route"],
    registry=None,
)
GONE = "client disconnected"


async def run_until_disconnected(request: Request, work: Callable[[CancelToken], T]) -> T:
    """`work(cancel)` on a worker thread, its result; ClientDisconnected once the client has gone and the
    work has stopped."""
    cancel = CancelToken()
    task = asyncio.ensure_future(run_in_threadpool(work, cancel))
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watcher.exception() is not None:  # the connection broke in another way
            log.debug("watching for a disconnect failed: %r", watcher.exception())
            await asyncio.wait((task,))
    except asyncio.CancelledError:  # the server is stopping: the work need not finish either
        cancel.cancel("server stopping")
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    cancel.cancel(GONE)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    CANCELLED.labels(route).inc()
    log.info("%s: the client disconnected; its transcription is being stopped", route)
    try:
        await task  # the pipeline lets go at its next check; the thread returns to the pool
    except Cancelled:
        pass
    except Exception:  # noqa: BLE001 - it failed on its way out; nobody is there to tell
        log.exception("%s: a transcription whose client had gone failed", route)
    raise ClientDisconnected("the client disconnected before the transcript was ready: it was stopped")


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone. Body parts still arriving are read and dropped (these routes
    have read what they need before the work starts)."""
    while (await receive())["type"] != "http.disconnect":
        pass
