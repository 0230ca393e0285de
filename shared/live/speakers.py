"""Speakers of a live session: each final utterance's voice joins the nearest running centroid, or
founds a new speaker when it is farther than `threshold` (cosine distance) from every one so far.

Hints bound the count: below `min_speakers` (or `num_speakers`) a new voice needs only `eager` (0.75)
times the distance; at `max_speakers` (or `num_speakers`) every utterance joins the nearest speaker.
Utterances with under `min_found_s` of speech carry too little voice to found a speaker and join the
nearest one (unless there is none yet).

Labels settle (`settle`, after every utterance): the last `memory` utterances are clustered again as the
file diarizer clusters its segments (average linkage on cosine distance up to `recluster`, speakers
heard under 3 s folded into the most alike unless they sound like nobody else, cosine k-means steps;
shared/pipeline/diarization/clustering.py), and each cluster takes the label that most of its speech
had (a new cluster, a new label). What one utterance alone could not tell (two early voices that turn
out one, a short piece closer to another speaker) is mended, and every move is reported, so a client
can relabel finals it has shown. Older utterances stay in their speaker's centroid. The thresholds are
chosen on the dev conversations' tune half (local_dev/eval/live_turns.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from shared.core.domain import SpeakerHints
from shared.pipeline.diarization.port import speaker_label


@dataclass(frozen=True)
class Move:
    """Utterances `items` belong to `speaker` now, not `previous`."""

    items: tuple[int, ...]
    speaker: str
    previous: str


@dataclass
class _Utterance:
    item: int | None
    voice: np.ndarray  # unit length
    seconds: float
    speaker: str


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-9)


class SpeakerTracker:
    def __init__(self, threshold: float, hints: SpeakerHints | None = None, *, min_found_s: float = 1.0,
                 default_max: int = 8, eager: float = 0.75, recluster: float = 0.0, fold_s: float = 3.0,
                 distinct: float = 0.28, memory: int = 256):
        hints = hints or SpeakerHints()
        self.threshold = threshold
        self.min_speakers = hints.num_speakers or hints.min_speakers or 1
        self.max_speakers = hints.num_speakers or hints.max_speakers or max(default_max, self.min_speakers)
        self.min_found_s = min_found_s
        self.eager = eager
        self.recluster = recluster  # 0: labels never change; else the remembered utterances' clustering threshold
        self.fold_s = fold_s  # a reclustered speaker heard less than this joins the most alike ...
        self.distinct = distinct  # ... unless it lies this far from every other
        self.hints = hints
        self._older: dict[str, np.ndarray] = {}  # per speaker (founding order): the sum of forgotten utterances
        self._recent: deque[_Utterance] = deque(maxlen=memory)
        self._founded = 0

    @property
    def count(self) -> int:
        return len(self._older)

    @property
    def labels(self) -> list[str]:
        """The speakers now (a merged one is gone)."""
        return list(self._older)

    def assign(self, embedding: np.ndarray, seconds: float, item: int | None = None) -> tuple[str, bool]:
        """The speaker of an utterance with this voice embedding and length; True when it is new."""
        e = _unit(np.asarray(embedding, np.float32))
        sums = self._sums()
        if not sums:
            return self._remember(item, e, seconds, self._found(e)), True
        labels = list(sums)
        distances = 1.0 - np.stack([_unit(sums[s]) for s in labels]) @ e
        best = int(np.argmin(distances))
        needed = self.threshold if self.count >= self.min_speakers else self.threshold * self.eager
        if self.count < self.max_speakers and seconds >= self.min_found_s and distances[best] > needed:
            return self._remember(item, e, seconds, self._found(e)), True
        return self._remember(item, e, seconds, labels[best]), False

    def centroid(self, label: str) -> np.ndarray:
        """The running centroid (unit length) of the speaker `label` (one this tracker gave)."""
        return _unit(self._sums()[label])

    def speaker_of(self, item: int) -> str | None:
        """The speaker of a remembered utterance now (None: forgotten or never given)."""
        return next((u.speaker for u in self._recent if u.item == item), None)

    def settle(self) -> list[Move]:
        """Cluster the remembered utterances again with all that has been heard since they were
        labelled; the utterances that change speaker, grouped by (speaker, previous)."""
        moved: dict[tuple[str, str], list[int]] = {}
        for u, to in self._reclustered():
            if u.item is not None:
                moved.setdefault((to, u.speaker), []).append(u.item)
            u.speaker = to
        return [Move(tuple(sorted(items)), to, previous) for (to, previous), items in moved.items()]

    def _reclustered(self) -> list[tuple[_Utterance, str]]:
        """The remembered utterances clustered as the file diarizer clusters its segments (average
        linkage up to `recluster`, small speakers folded into the most alike, k-means steps), each
        cluster keeping the label most of its speech had: the utterances whose label changes."""
        if self.recluster <= 0 or len(self._recent) < 2:
            return []
        from scipy.optimize import linear_sum_assignment

        from shared.pipeline.diarization import clustering

        recent = list(self._recent)
        ends = np.cumsum([u.seconds for u in recent])
        spans = np.stack([ends - [u.seconds for u in recent], ends], axis=1)
        clusters = clustering.cluster(
            spans, np.stack([u.voice for u in recent]), np.arange(len(recent)), group=1,
            threshold=self.recluster, min_speaker_s=self.fold_s, distinct=self.distinct,
            num_speakers=self.hints.num_speakers,
            min_speakers=self.hints.min_speakers or 1, max_speakers=self.max_speakers,
        )
        labels = list(self._older)
        overlap = np.zeros((clusters.max() + 1, len(labels)))
        for u, c in zip(recent, clusters):
            overlap[c, labels.index(u.speaker)] += u.seconds
        rows, cols = linear_sum_assignment(-overlap)
        named = {int(r): labels[c] for r, c in zip(rows, cols) if overlap[r, c] > 0}
        for c in range(len(overlap)):
            if c not in named:
                named[c] = self._found(recent[0].voice)
        out = [(u, named[int(c)]) for u, c in zip(recent, clusters) if named[int(c)] != u.speaker]
        for label in labels:  # a speaker left with no utterance and nothing older is gone
            if label not in named.values() and not np.any(self._older[label]):
                del self._older[label]
        return out

    def _sums(self) -> dict[str, np.ndarray]:
        sums = {s: v.copy() for s, v in self._older.items()}
        for u in self._recent:
            sums[u.speaker] = sums[u.speaker] + u.voice * u.seconds
        return sums

    def _remember(self, item: int | None, e: np.ndarray, seconds: float, speaker: str) -> str:
        if len(self._recent) == self._recent.maxlen:
            gone = self._recent[0]
            self._older[gone.speaker] = self._older[gone.speaker] + gone.voice * gone.seconds
        self._recent.append(_Utterance(item, e, max(seconds, 1e-3), speaker))
        return speaker

    def _found(self, e: np.ndarray) -> str:
        label = speaker_label(self._founded)
        self._founded += 1
        self._older[label] = np.zeros_like(e)
        return label
