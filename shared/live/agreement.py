"""LocalAgreement-2 (whisper_streaming): commit the words two consecutive hypotheses agree on.

Each partial decodes the whole open utterance again, so each hypothesis is the utterance's words so far.
A word is committed once two hypotheses in a row agree on it (and on every word before it); committed
words are emitted once and never retracted, whatever later hypotheses say about them. What the newest
hypothesis says past them is `tentative`: shown sooner, and replaced by the next hypothesis.
"""

from __future__ import annotations

import re

from shared.core.domain import Word

SLACK_S = 0.1  # a hypothesis word starting this close before the last committed word's end may be new
MAX_NGRAM = 5  # words of the committed tail a new hypothesis may repeat at its head


def normalised(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class LocalAgreement:
    def __init__(self) -> None:
        self.committed: list[Word] = []
        self.tentative: list[Word] = []  # the newest hypothesis's words after the committed ones
        self._previous: list[Word] = []

    def update(self, hypothesis: list[Word]) -> list[Word]:
        """Take the newest hypothesis of the utterance; return the words it newly commits."""
        tail, previous = self._uncommitted(hypothesis), self._uncommitted(self._previous)
        self._previous = hypothesis
        agreed = []
        for new, old in zip(tail, previous):
            if normalised(new.word) != normalised(old.word) or not normalised(new.word):
                break
            agreed.append(old)  # the first sighting: its times were seen first
        self.committed += agreed
        self.tentative = tail[len(agreed):]
        return agreed

    def _uncommitted(self, hypothesis: list[Word]) -> list[Word]:
        """The hypothesis's words after what is committed: those past the last committed word (in time),
        less a repeat of the committed tail at their head."""
        if not self.committed:
            return list(hypothesis)
        last_end = self.committed[-1].end
        tail = [w for w in hypothesis if w.start > last_end - SLACK_S]
        committed = [normalised(w.word) for w in self.committed[-MAX_NGRAM:]]
        for n in range(min(MAX_NGRAM, len(tail), len(committed)), 0, -1):
            if [normalised(w.word) for w in tail[:n]] == committed[-n:]:
                return tail[n:]
        return tail
