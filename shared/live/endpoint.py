"""Utterance boundaries on a live stream: Silero VAD scored window by window as audio arrives.

An utterance opens when speech has lasted `min_speech_ms` (its start is the first speech window, less
`prefix_padding_ms`), and closes once the probability has stayed under the negative threshold for
`silence_ms`, or at `max_utterance_s`, where it is cut at the least speech-like window of its last
seconds and the rest opens the next utterance. A speaker change found inside it (shared/live/turns.py)
cuts it the same way (`split`, at `quietest`). Times are sample indices in the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.core.domain import SAMPLE_RATE
from shared.pipeline.silero import WINDOW, SileroState

END_PAD_MS = 200  # audio kept after the last speech window, so a soft word end is not clipped
CUT_SEARCH_S = 5.0  # a forced cut falls in the utterance's last seconds, at its least speech-like window
TURN_SEARCH_S = 0.6  # a cut at a speaker change falls this close to where the voices' windows change


@dataclass(frozen=True)
class Boundary:
    kind: str  # "start" or "end"
    sample: int  # where the utterance starts or ends, in the stream
    speech_at: int = 0  # "start": the first speech window (before prefix padding)


class Endpointer:
    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        silence_ms: int = 600,
        max_utterance_s: float = 30.0,
        prefix_padding_ms: int = 300,
        min_speech_ms: int = 250,
    ):
        self.threshold = threshold
        self.neg_threshold = neg_threshold if neg_threshold is not None else max(threshold - 0.15, 0.01)
        self.silence = silence_ms * SAMPLE_RATE // 1000
        self.max_samples = int(max_utterance_s * SAMPLE_RATE)
        self.prefix = prefix_padding_ms * SAMPLE_RATE // 1000
        self.min_speech = min_speech_ms * SAMPLE_RATE // 1000
        self._state = SileroState()
        self._pending = np.zeros(0, np.float32)
        self._scored = 0  # samples scored so far (whole windows)
        self._floor = 0  # an utterance never starts before the previous one's end
        self._speech_at: int | None = None  # first speech window of a run not yet long enough
        self._open_at: int | None = None  # start of the open utterance
        self._silent_since: int | None = None
        self._probs: list[float] = []  # the open utterance's window probabilities, for a forced cut
        self._last: tuple[int | None, list[float]] = (None, [])  # the last closed utterance's start and probabilities

    @property
    def is_open(self) -> bool:
        return self._open_at is not None

    def feed(self, samples: np.ndarray) -> list[Boundary]:
        audio = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(audio) // WINDOW
        self._pending = audio[n * WINDOW :].copy()
        if n == 0:
            return []
        probs = self._state.score(np.ascontiguousarray(audio[: n * WINDOW], np.float32).reshape(n, WINDOW))
        out: list[Boundary] = []
        for p in probs.tolist():
            at, self._scored = self._scored, self._scored + WINDOW
            out += self._step(float(p), at)
        return out

    def close(self, at: int | None = None) -> list[Boundary]:
        """Close the open utterance now (a manual commit, or the end of the stream)."""
        self._speech_at = None
        if self._open_at is None:
            return []
        return [self._end(self._scored if at is None else at)]

    def _step(self, p: float, at: int) -> list[Boundary]:
        if self._open_at is None:
            if p < self.threshold:
                self._speech_at = None
                return []
            if self._speech_at is None:
                self._speech_at = at
            if at + WINDOW - self._speech_at < self.min_speech:
                return []
            start = max(self._floor, self._speech_at - self.prefix)
            speech_at, self._speech_at = self._speech_at, None
            self._open_at, self._silent_since = start, None
            self._probs = [1.0] * ((at + WINDOW - start) // WINDOW)
            return [Boundary("start", start, speech_at)]
        self._probs.append(p)
        if p >= self.threshold:
            self._silent_since = None
        elif p < self.neg_threshold and self._silent_since is None:
            self._silent_since = at
        if self._silent_since is not None and at + WINDOW - self._silent_since >= self.silence:
            return [self._end(min(self._silent_since + END_PAD_MS * SAMPLE_RATE // 1000, at + WINDOW))]
        if at + WINDOW - self._open_at >= self.max_samples:
            return self._forced_cut(at + WINDOW)
        return []

    def _end(self, at: int) -> Boundary:
        self._last = (self._open_at, self._probs[: max(0, (at - self._open_at) // WINDOW)])
        self._open_at, self._silent_since, self._probs = None, None, []
        self._floor = at
        return Boundary("end", at)

    def _forced_cut(self, now: int) -> list[Boundary]:
        """Speech ran on for max_utterance_s: cut at the least speech-like window of the last seconds,
        and open the next utterance right there (the speaker has not stopped)."""
        search = min(len(self._probs) - 1, int(CUT_SEARCH_S * SAMPLE_RATE) // WINDOW)
        tail = self._probs[-search:]
        cut = self._open_at + (len(self._probs) - search + int(np.argmin(tail))) * WINDOW
        return self._cut(min(max(cut, self._open_at + WINDOW), now))

    def split(self, at: int) -> list[Boundary]:
        """Cut the open utterance at sample `at` (a speaker change, shared/live/turns.py) and open the
        next one there. Nothing when no utterance is open or `at` lies outside it."""
        if self._open_at is None or not self._open_at < at < self._scored:
            return []
        return self._cut(at)

    def quietest(self, near: int, search_s: float = TURN_SEARCH_S) -> int | None:
        """The start of the least speech-like window within `search_s` of sample `near`, inside the open
        utterance or, with none open, the one that closed last (None outside them)."""
        start, probs = (self._open_at, self._probs) if self._open_at is not None else self._last
        if start is None or not start < near < start + len(probs) * WINDOW:
            return None
        reach = int(search_s * SAMPLE_RATE) // WINDOW
        first = max(1, (near - start) // WINDOW - reach)
        last = min(len(probs), (near - start) // WINDOW + reach + 1)
        if first >= last:
            return None
        return start + (first + int(np.argmin(probs[first:last]))) * WINDOW

    def speech_share(self, start: int, end: int) -> float:
        """The share of the windows between samples `start` and `end` that score as speech, in the open
        utterance or, with none open, the one that closed last (0 outside them)."""
        at, probs = (self._open_at, self._probs) if self._open_at is not None else self._last
        if at is None:
            return 0.0
        chosen = probs[max(0, (start - at) // WINDOW) : max(0, (end - at) // WINDOW)]
        return sum(p >= self.threshold for p in chosen) / len(chosen) if chosen else 0.0

    def _cut(self, cut: int) -> list[Boundary]:
        rest = self._probs[(cut - self._open_at) // WINDOW :]
        silent = self._silent_since if self._silent_since is not None and self._silent_since >= cut else None
        end = self._end(cut)
        self._open_at, self._probs, self._silent_since = cut, rest, silent
        return [end, Boundary("start", cut, cut)]
