"""Speakers of a live session: each final utterance's voice joins the nearest running centroid, or
founds a new speaker when it is farther than `threshold` (cosine distance) from every one so far.

Hints bound the count: below `min_speakers` (or `num_speakers`) a new voice needs only `eager` (0.75)
times the distance; at `max_speakers` (or `num_speakers`) every utterance joins the nearest speaker.
The threshold and `eager` are chosen on the dev conversations' tune half (local_dev/eval/live_speakers.py).
Utterances with under `min_found_s` of speech carry too little voice to found a speaker and join the
nearest one (unless there is none yet).
"""

from __future__ import annotations

import numpy as np

from shared.pipeline.diarization.port import speaker_label
from shared.core.domain import SpeakerHints


class SpeakerTracker:
    def __init__(self, threshold: float, hints: SpeakerHints | None = None, *, min_found_s: float = 1.0,
                 default_max: int = 8, eager: float = 0.75):
        hints = hints or SpeakerHints()
        self.threshold = threshold
        self.min_speakers = hints.num_speakers or hints.min_speakers or 1
        self.max_speakers = hints.num_speakers or hints.max_speakers or max(default_max, self.min_speakers)
        self.min_found_s = min_found_s
        self.eager = eager
        self._sums: list[np.ndarray] = []  # duration-weighted sums of unit embeddings

    @property
    def count(self) -> int:
        return len(self._sums)

    def assign(self, embedding: np.ndarray, seconds: float) -> tuple[str, bool]:
        """The speaker of an utterance with this voice embedding and length; True when it is new."""
        e = embedding / (np.linalg.norm(embedding) + 1e-9)
        if not self._sums:
            return self._found(e, seconds), True
        centroids = np.stack([s / (np.linalg.norm(s) + 1e-9) for s in self._sums])
        distances = 1.0 - centroids @ e
        best = int(np.argmin(distances))
        needed = self.threshold if self.count >= self.min_speakers else self.threshold * self.eager
        if self.count < self.max_speakers and seconds >= self.min_found_s and distances[best] > needed:
            return self._found(e, seconds), True
        self._sums[best] = self._sums[best] + e * seconds
        return speaker_label(best), False

    def centroid(self, label: str) -> np.ndarray:
        """The running centroid (unit length) of the speaker `label` (one this tracker gave)."""
        s = self._sums[int(label.rsplit("_", 1)[1])]
        return s / (np.linalg.norm(s) + 1e-9)

    def _found(self, e: np.ndarray, seconds: float) -> str:
        self._sums.append(e * max(seconds, 1e-3))
        return speaker_label(len(self._sums) - 1)
