"""Stopping a transcription nobody waits for any more.

A CancelToken is handed to a run (shared/pipeline/flow.py PipelineRun) by whoever may lose interest in
it: the synchronous API routes when their client disconnects (shared/api/cancel_on_disconnect.py), the
job executor when a job is cancelled or the server stops (shared/jobs/executor.py). The
run checks it between stages and between transcription batches, and every wait of the run on a stage
ends as soon as the token is cancelled (wait), so a thread blocked on a queued stage call lets go at
once; the calls it had queued are cancelled with it, and a call already running on a model finishes
on its own (a decode cannot be interrupted) with no one to read its result.
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """The run was cancelled: the reason says by whom (e.g. the client disconnected)."""


class CancelToken:
    """Set once, from any thread; waits on stage calls end when it is."""

    def __init__(self) -> None:
        self._set: Future[str] = Future()  # done when cancelled: a Future, so waits can include it

    def cancel(self, reason: str = "cancelled") -> None:
        try:
            self._set.set_result(reason)
        except concurrent.futures.InvalidStateError:  # cancelled before: the first reason stays
            pass

    @property
    def cancelled(self) -> bool:
        return self._set.done()

    @property
    def reason(self) -> str | None:
        return self._set.result() if self._set.done() else None

    def check(self) -> None:
        """Raise Cancelled if the token is cancelled."""
        if self._set.done():
            raise Cancelled(self._set.result())

    def wait(self, future: Future[T]) -> T:
        """The future's result, or Cancelled (and the future cancelled, if it has not started) as soon as
        the token is cancelled, whichever comes first."""
        concurrent.futures.wait((future, self._set), return_when=concurrent.futures.FIRST_COMPLETED)
        if not future.done():
            future.cancel()
            self.check()
        return future.result()
