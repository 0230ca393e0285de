"""Speaker changes inside an open live utterance: people hand over faster than an utterance closes.

The speaker encoder's vectors of 1.6 s windows every 0.4 s (on a grid fixed in the stream) cover the open
utterance as it grows. For every hand-over point on that grid, the mean voice of the windows wholly
before it is compared with the mean voice of those wholly after it (at least `min_side_windows` and at
most `side_windows` of each, counting only windows that are mostly speech); where their cosine distance peaks above `threshold`, and
the peak stands with `confirm_windows` more windows scored after it, the utterance is cut (shared/live/endpoint.py `split`, at the least speech-like moment near there) and each
piece gets its own final and speaker. The threshold is chosen on the tune half of quick hand-over
conversations (local_dev/eval/live_turns.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shared.core.domain import SAMPLE_RATE

if TYPE_CHECKING:
    from shared.live.endpoint import Endpointer

WINDOW_S = 1.6  # the encoder's window (EmbeddedDiarizer.window_s) ...
HOP_S = 0.4  # ... and its hop (EmbeddedDiarizer.hop_s): Stages.embed_windows' grid
HOP = int(HOP_S * SAMPLE_RATE)
SPAN = round(WINDOW_S / HOP_S)  # windows overlap this many hops


def grid_start(sample: int) -> int:
    """The first grid point at or after `sample`: windows start on multiples of HOP in the stream."""
    return -(-sample // HOP) * HOP


class TurnDetector:
    def __init__(self, threshold: float, *, min_side_windows: int = 2, side_windows: int = 12,
                 confirm_windows: int = 2, min_speech: float = 0.5):
        self.threshold = threshold
        self.min_side = min_side_windows
        self.side = side_windows
        self.confirm = confirm_windows
        self.min_speech = min_speech

    def change(self, vectors: np.ndarray, speech: np.ndarray, *, settled: bool = False) -> int | None:
        """Where the voice changes in windows `vectors` (rows, window i starting i hops after the
        first), `speech` the share of each window that is speech: the grid index j of the hand-over
        (the windows wholly before it, j - SPAN and earlier, against those from j on; at most
        `side_windows` of each, so a third voice further off does not blur the two), or None.
        `settled`: the utterance has ended, no window will follow (a peak needs no confirmation)."""
        n = len(vectors)
        keep = speech >= self.min_speech
        if keep.sum() < 2 * self.min_side:
            return None
        unit = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9) * keep[:, None]
        sums = np.concatenate([np.zeros((1, unit.shape[1])), np.cumsum(unit, axis=0)])  # sums[i]: windows < i
        counts = np.concatenate([[0], np.cumsum(keep)])
        best, best_j, last = self.threshold, None, 0
        for j in range(SPAN, n):
            a, b = max(0, j - SPAN + 1 - self.side), j - SPAN + 1  # before: windows a..b-1
            c, d = j, min(n, j + self.side)  # after: windows c..d-1
            left, left_n = sums[b] - sums[a], counts[b] - counts[a]
            right, right_n = sums[d] - sums[c], counts[d] - counts[c]
            if left_n < self.min_side or right_n < self.min_side:
                continue
            last = j
            distance = 1.0 - float(left @ right) / (np.linalg.norm(left) * np.linalg.norm(right) + 1e-9)
            if distance > best:
                best, best_j = distance, j
        # a peak among the last hand-overs that can be scored may still be rising (the windows after it
        # hold the next voice only in part): it counts once `confirm` later windows have been scored
        confirm = 0 if settled else self.confirm
        return best_j if best_j is not None and best_j <= last - confirm else None

def find_cut(detector: TurnDetector, endpointer: Endpointer, grid: int, vectors, *, settled: bool = False,
             until: int | None = None) -> int | None:
    """The sample where the utterance whose windows from `grid` are `vectors` changes speaker (its
    least speech-like moment near the change), or None: in the open utterance or, `settled`, the one
    the endpointer closed last at `until` (windows reaching past it belong to the next)."""
    if until is not None:
        vectors = vectors[: max(0, (until - grid - SPAN * HOP) // HOP + 1)]
    if not len(vectors):
        return None
    starts = [grid + k * HOP for k in range(len(vectors))]
    speech = np.array([endpointer.speech_share(a, a + SPAN * HOP) for a in starts])
    j = detector.change(np.stack(vectors), speech, settled=settled)
    return None if j is None else endpointer.quietest(starts[j])
