"""Names for a live session's speakers, from the caller's enrolled voices (the `voices` / `identify` options).

After each final, its tracked speaker's running centroid (shared/live/speakers.py) is compared with the
known voices by cosine similarity; from `threshold` up (VOICE_MATCH_THRESHOLD, as for files) the
speaker takes the voice's name. The centroid rather than the utterance alone: it steadies as the speaker
talks, and on a speaker's first utterance it is that utterance, so a known voice is named at once.

One voice names at most one tracked speaker. A named speaker keeps its name (even if a later utterance
pulls its centroid under the threshold) unless another voice matches it `margin` better; a voice held
by one speaker passes to another only when it matches that one `margin` better, and the first loses
the name (back to SPEAKER_xx until a voice of its own matches). Without the margin two close scores
would swap a name back and forth between finals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.pipeline.identify import Identity, KnownVoice

MARGIN = 0.05


class VoiceNames:
    def __init__(self, known: Sequence[KnownVoice], threshold: float, *, margin: float = MARGIN):
        self.known = list(known)
        self.threshold = threshold
        self.margin = margin
        self._vectors = np.stack([k.vector for k in self.known]).astype(np.float32) if self.known else None
        self._voice_of: dict[str, int] = {}  # speaker label -> index of the voice naming it
        self._holder: dict[int, str] = {}  # voice index -> the label it names
        self._score: dict[str, float] = {}  # label -> its similarity to its voice at its last final

    def __bool__(self) -> bool:
        return bool(self.known)

    def update(self, label: str, centroid: np.ndarray) -> Identity | None:
        """The identity of the speaker `label` now that its centroid is this (None: unnamed)."""
        if self._vectors is None:
            return None
        c = centroid / (np.linalg.norm(centroid) + 1e-9)
        scores = self._vectors @ c
        current = self._voice_of.get(label)
        if current is not None:
            self._score[label] = float(scores[current])
        choice = self._best(label, scores)
        if choice is not None and choice != current and (current is None or scores[choice] > scores[current] + self.margin):
            self._take(label, choice, float(scores[choice]))
        return self.identity(label)

    def forget(self, label: str) -> None:
        """The speaker `label` is gone (merged into another): its voice is free again."""
        j = self._voice_of.pop(label, None)
        if j is not None:
            del self._holder[j], self._score[label]

    def identity(self, label: str) -> Identity | None:
        j = self._voice_of.get(label)
        if j is None:
            return None
        voice = self.known[j]
        return Identity(voice.name, voice.voice_id, round(self._score[label], 3))

    def _best(self, label: str, scores: np.ndarray) -> int | None:
        """The best voice from the threshold up that this speaker may hold: a free one, its own, or one
        it matches `margin` better than its holder does."""
        for j in np.argsort(-scores):
            j = int(j)
            if scores[j] < self.threshold:
                return None
            holder = self._holder.get(j)
            if holder is None or holder == label or scores[j] > self._score[holder] + self.margin:
                return j
        return None

    def _take(self, label: str, j: int, score: float) -> None:
        previous = self._holder.get(j)
        if previous is not None and previous != label:
            del self._voice_of[previous], self._score[previous]
        old = self._voice_of.get(label)
        if old is not None:
            del self._holder[old]
        self._voice_of[label], self._holder[j], self._score[label] = j, label, score
