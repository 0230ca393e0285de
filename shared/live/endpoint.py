"""Utterance boundaries on a live stream: Silero VAD scored window by window as audio arrives.

An utterance opens when speech has lasted `min_speech_ms` (its start is the first speech window, less
`prefix_padding_ms`), and closes once the probability has stayed under the negative threshold for
`silence_ms`, or at `max_utterance_s`, where it is cut at the least speech-like window of its last
seconds and the rest opens the next utterance. A speaker change found inside it (shared/live/turns.py)
cuts it the same way (`split`, at `quietest`). Times are sample indices in the stream.

The second look, as file chunking has it (shared/pipeline/vad.py `loud_regions`): Silero can score a
plainly audible voice (tinny, muffled, distant) under 0.1. A stretch of windows LOUD_DB over the stream's
noise floor that Silero scores under `threshold`, LOUD_MIN_S long across dips of up to LOUD_BRIDGE_S,
opens an utterance, and keeps an open one from closing. The floor is a running one: the 10th-percentile
window level of the last FLOOR_S seconds (the file pipeline takes the whole clip's), so a noise that goes
on becomes the floor; levels are of the audio high-passed at 80 Hz, as Silero hears it (a swelling
low-frequency floor read as sound otherwise). The second look alone holds an utterance open at most
LOUD_HOLD_S past Silero's last speech window, then stays deaf until the sound dips for LOUD_BRIDGE_S
(speech pauses; a fan or music does not). The probabilities `quietest` and `speech_share` read stay
Silero's own: the second look decides what the models hear, not what counts as a voice for speaker
turns (the file pipeline's diarizer does not hear its regions either).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.signal import sosfilt

from shared.core.domain import SAMPLE_RATE
from shared.pipeline.silero import HIGHPASS_SOS, WINDOW, SileroState
from shared.pipeline.vad import LOUD_BRIDGE_S, LOUD_DB, LOUD_MIN_DB, LOUD_MIN_S, window_levels

END_PAD_MS = 200  # audio kept after the last speech window, so a soft word end is not clipped
CUT_SEARCH_S = 5.0  # a forced cut falls in the utterance's last seconds, at its least speech-like window
TURN_SEARCH_S = 0.6  # a cut at a speaker change falls this close to where the voices' windows change
FLOOR_S = 30.0  # the running noise floor: the 10th-percentile window level of this many seconds ...
FLOOR_PERCENTILE = 10  # ... (loud_regions takes the clip's 10th percentile)
FLOOR_MIN_S = 2.0  # no second look before this much of the stream has been heard
FLOOR_EVERY = 16  # the floor is recomputed every this many windows (0.5 s)
LOUD_HOLD_S = 10.0  # the second look alone holds an utterance open at most this long past Silero's speech


class RunningFloor:
    """The stream's noise floor: the FLOOR_PERCENTILE level (dBFS) of its last `seconds` of windows,
    recomputed every FLOOR_EVERY windows; None until FLOOR_MIN_S have been heard. Bounded memory."""

    def __init__(self, seconds: float = FLOOR_S):
        self._levels = np.zeros(max(FLOOR_EVERY, int(seconds * SAMPLE_RATE) // WINDOW), np.float32)
        self._min = min(len(self._levels), int(FLOOR_MIN_S * SAMPLE_RATE) // WINDOW)
        self._seen = 0
        self.value: float | None = None

    def add(self, level: float) -> None:
        self._levels[self._seen % len(self._levels)] = max(level, -100.0)
        self._seen += 1
        if self._seen % FLOOR_EVERY == 0 and self._seen >= self._min:
            self.value = float(np.percentile(self._levels[: self._seen], FLOOR_PERCENTILE))

    def is_loud(self, level: float) -> bool:
        """A window this loud carries sound (loud_regions' test, against the running floor)."""
        return self.value is not None and level >= max(self.value + LOUD_DB, LOUD_MIN_DB)


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
        second_look: bool = True,
        floor_s: float = FLOOR_S,
        hold_s: float = LOUD_HOLD_S,
        highpass: bool = True,
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
        # the second look: a stretch of loud windows Silero scores under threshold (None: off)
        self._look = RunningFloor(floor_s) if second_look else None
        self._zi = np.zeros((HIGHPASS_SOS.shape[0], 2)) if highpass else None  # the levels' high-pass state
        self.loud_min = int(LOUD_MIN_S * SAMPLE_RATE)
        self.bridge = int(LOUD_BRIDGE_S * SAMPLE_RATE) // WINDOW  # windows of a dip a stretch survives
        self.hold = int(hold_s * SAMPLE_RATE)
        self._loud_from: int | None = None  # the stretch's first and last loud window
        self._loud_last = 0
        self._heard = 0  # the last window Silero scored as speech (or where the second look opened)
        self._deaf = False  # the second look held on for hold_s: off until the sound dips
        # the last windows' probabilities: what an utterance the second look opens starts with
        self._recent: deque[float] = deque(maxlen=(self.prefix + self.loud_min) // WINDOW + self.bridge + 2)

    @property
    def is_open(self) -> bool:
        return self._open_at is not None

    def feed(self, samples: np.ndarray) -> list[Boundary]:
        audio = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(audio) // WINDOW
        self._pending = audio[n * WINDOW :].copy()
        if n == 0:
            return []
        windows = np.ascontiguousarray(audio[: n * WINDOW], np.float32).reshape(n, WINDOW)
        probs = self._state.score(windows).tolist()
        levels = self._levels(windows.reshape(-1)) if self._look is not None else [None] * n
        out: list[Boundary] = []
        for p, level in zip(probs, levels):
            at, self._scored = self._scored, self._scored + WINDOW
            sound = self._second_look(p, level, at) if level is not None else False
            out += self._step(float(p), at, sound)
        return out

    def _levels(self, samples: np.ndarray) -> list[float]:
        """Each window's level (window_levels), of the audio as Silero hears it: high-passed at
        HIGHPASS_HZ, so rumble and a swelling low-frequency floor do not read as sound."""
        if self._zi is not None:
            samples, self._zi = sosfilt(HIGHPASS_SOS, samples, zi=self._zi)
        return window_levels(samples)[: len(samples) // WINDOW].tolist()

    def _second_look(self, p: float, level: float, at: int) -> bool:
        """Whether window `at` belongs to a stretch of sound Silero missed: LOUD_MIN_S or more of loud
        windows it scores under threshold, across dips (quieter windows, or Silero's own speech, which
        the second look leaves to Silero) of at most LOUD_BRIDGE_S, as loud_regions finds them."""
        self._look.add(level)
        if self._look.is_loud(level) and p < self.threshold:
            if self._loud_from is None:
                self._loud_from = at
            self._loud_last = at
        elif self._loud_from is not None and (at - self._loud_last) // WINDOW > self.bridge:
            self._loud_from, self._deaf = None, False  # the sound dipped: a new stretch may open again
        if self._loud_from is None or self._deaf or self._loud_last != at:
            return False
        return at + WINDOW - self._loud_from >= self.loud_min

    def close(self, at: int | None = None) -> list[Boundary]:
        """Close the open utterance now (a manual commit, or the end of the stream)."""
        self._speech_at = self._loud_from = None
        if self._open_at is None:
            return []
        return [self._end(self._scored if at is None else at)]

    def _step(self, p: float, at: int, sound: bool = False) -> list[Boundary]:
        """One window: Silero's probability `p`, and `sound`: the second look hears a stretch of sound."""
        self._recent.append(p)
        if p >= self.threshold:
            self._heard = at
        if self._open_at is None:
            if sound:  # sound Silero missed, long enough: open where the stretch began
                start = max(self._floor, self._loud_from - self.prefix)
                self._speech_at, self._heard = None, self._loud_from
                self._open_at, self._silent_since = start, None
                count = (at + WINDOW - start) // WINDOW
                self._probs = [1.0] * (count - len(self._recent)) + list(self._recent)[-count:]
                return [Boundary("start", start, max(start, self._loud_from))]
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
        if sound and at + WINDOW - self._heard > self.hold:
            sound, self._deaf = False, True  # held long enough on sound alone: a steady noise, not a voice
        if p >= self.threshold or sound:
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
        """The start of the least speech-like window within `search_s` of sample `near`, inside the
        utterance that holds `near`: the open one or the one that closed last (None outside them)."""
        start, probs = self._holding(near)
        if start is None or not start < near < start + len(probs) * WINDOW:
            return None
        reach = int(search_s * SAMPLE_RATE) // WINDOW
        first = max(1, (near - start) // WINDOW - reach)
        last = min(len(probs), (near - start) // WINDOW + reach + 1)
        if first >= last:
            return None
        return start + (first + int(np.argmin(probs[first:last]))) * WINDOW

    def speech_share(self, start: int, end: int) -> float:
        """The share of the windows between samples `start` and `end` that score as speech, in the
        utterance that holds `start`: the open one or the one that closed last (0 outside them)."""
        at, probs = self._holding(start)
        if at is None:
            return 0.0
        chosen = probs[max(0, (start - at) // WINDOW) : max(0, (end - at) // WINDOW)]
        return sum(p >= self.threshold for p in chosen) / len(chosen) if chosen else 0.0

    def _holding(self, sample: int) -> tuple[int | None, list[float]]:
        """The open utterance when it holds `sample`, else the one that closed last (a cut has just
        ended it where the open one begins)."""
        if self._open_at is not None and sample >= self._open_at:
            return self._open_at, self._probs
        return self._last

    def _cut(self, cut: int) -> list[Boundary]:
        rest = self._probs[(cut - self._open_at) // WINDOW :]
        silent = self._silent_since if self._silent_since is not None and self._silent_since >= cut else None
        end = self._end(cut)
        self._open_at, self._probs, self._silent_since = cut, rest, silent
        return [end, Boundary("start", cut, cut)]
