"""The recent samples of a live stream, as one float32 array that appends without copying what it holds.

`SampleBuffer` keeps the stream's samples from `start` (a stream index) to `end`. Appending writes into
spare room at the back; when there is none, the held samples move to the front (when they fill less than
half of the array) or the array doubles: each sample is copied a bounded number of times however many
pieces arrive (concatenating on every append copied the whole open utterance each time). Trimming the
front only moves `start`. What it holds is bounded by its owner: the session trims to the open
utterance (at most STREAM_MAX_UTTERANCE_S) and a second before it.
"""

from __future__ import annotations

import numpy as np

from shared.core.domain import SAMPLE_RATE


class SampleBuffer:
    def __init__(self, capacity: int = SAMPLE_RATE):
        self._data = np.zeros(max(capacity, 1), np.float32)
        self._lo = 0  # index in _data of the sample at `start`
        self._hi = 0  # index in _data past the last sample
        self.start = 0  # stream index of the first sample held

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def end(self) -> int:
        """Stream index past the last sample held."""
        return self.start + len(self)

    @property
    def capacity(self) -> int:
        return len(self._data)

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self._hi + n > len(self._data):
            held = len(self)
            if held + n <= len(self._data) // 2:
                self._data[:held] = self._data[self._lo : self._hi]  # move to the front: room at the back
            else:
                grown = np.empty(max(2 * len(self._data), held + n), np.float32)
                grown[:held] = self._data[self._lo : self._hi]
                self._data = grown
            self._lo, self._hi = 0, held
        self._data[self._hi : self._hi + n] = samples
        self._hi += n

    def trim(self, before: int) -> None:
        """Forget the samples before stream index `before`."""
        drop = min(max(before - self.start, 0), len(self))
        self._lo += drop
        self.start += drop
        if self._lo == self._hi:
            self._lo = self._hi = 0

    def copy(self, start: int, end: int | None = None) -> np.ndarray:
        """A copy of the samples from stream index `start` to `end` (default: the last), as far as held."""
        a = min(max(start - self.start, 0), len(self))
        b = len(self) if end is None else min(max(end - self.start, a), len(self))
        return self._data[self._lo + a : self._lo + b].copy()
