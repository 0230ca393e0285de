"""One live session: audio in as it arrives, events out (shared/live/events.py).

`feed` runs the endpointer on the new samples and asks for a partial of the open utterance every
`partial_interval_s` of audio, and no more often than that in wall time (one in flight at a time: a
client sending faster than real time gets no more partial work than a live one); results arrive on
runner threads and are turned into events under the session's lock. When an utterance closes, its
audio goes to the accurate model and the speaker encoder; finals are reported in utterance order, each
with its speaker. Only the open utterance's audio (and a little before it, for prefix padding) is
held: memory does not grow with the session's length. Without turn detection (manual commits) an
utterance that reaches `max_utterance_s` is committed by the server, as with turn detection, so no
client keeps more than that open. A session whose audio runs more than AHEAD_S ahead of the wall clock
since its first sample (sent faster than it plays) gets no partials, and its finals go through the
models' background lane (shared/live/models.py): live sessions are served first.

With turn detection and diarization, the open utterance's voice is watched too: its encoder windows are
embedded as they complete, and a speaker change found in them (shared/live/turns.py) cuts the utterance
there, as silence would: each piece has its own final and speaker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from shared.core.domain import SAMPLE_RATE, TranscribeOptions, Word
from shared.core.errors import live_code
from shared.live.agreement import LocalAgreement
from shared.live.buffer import SampleBuffer
from shared.live.endpoint import Boundary, Endpointer
from shared.live.events import (
    Event,
    FinalUtterance,
    ItemFailed,
    PartialWords,
    SpeakerFound,
    SpeakerUpdate,
    SpeechStarted,
    SpeechStopped,
)
from shared.live.models import LiveModels
from shared.live.naming import VoiceNames
from shared.live.speakers import SpeakerTracker
from shared.live.turns import HOP, SPAN, TurnDetector, find_cut, grid_start
from shared.pipeline.identify import KnownVoice

log = logging.getLogger(__name__)

TRANSCRIPTION_FAILED = live_code("transcription_failed")  # an utterance's final could not be made
PREROLL_S = 1.0  # audio kept while nobody speaks: the prefix padding and the speech that opens an utterance
# audio this far ahead of the wall clock: not live (no partials, finals in the background lane). A live source
# (a microphone) is never ahead by more than its network's jitter, a resumed one catching up included
AHEAD_S = 3.0


@dataclass(frozen=True)
class LiveConfig:
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    turn_detection: bool = True  # False: utterances end only when the client commits
    vad_threshold: float = 0.5
    vad_neg_threshold: float | None = None  # default vad_threshold - 0.15
    silence_ms: int = 600
    prefix_padding_ms: int = 300
    max_utterance_s: float = 30.0
    partial_interval_s: float = 0.5
    partials: bool = True
    speaker_threshold: float = 0.2
    turn_threshold: float = 0.25  # a speaker change inside an utterance cuts it (0: only silence does)
    speaker_recluster: float = 0.2  # finals' speakers clustered again after each one, up to this distance (0: never)
    match_threshold: float = 0.75  # a speaker takes an enrolled voice's name from this cosine similarity up

    @classmethod
    def from_settings(cls, settings, options: TranscribeOptions, **overrides) -> "LiveConfig":
        values = dict(
            options=options,
            silence_ms=settings.stream_silence_ms,
            max_utterance_s=settings.stream_max_utterance_s,
            partial_interval_s=settings.stream_partial_interval_ms / 1000,
            speaker_threshold=settings.stream_speaker_threshold,
            turn_threshold=settings.stream_turn_threshold,
            speaker_recluster=settings.stream_speaker_recluster,
            match_threshold=settings.voice_match_threshold,
            vad_threshold=settings.stream_vad_threshold,
            vad_neg_threshold=settings.stream_vad_neg_threshold,
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class _Open:
    item: int
    start: int  # sample
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    partial_at: int = 0  # samples received when the last partial was asked for
    partial_wall: float = 0.0  # and when (monotonic seconds)
    partial_busy: bool = False
    grid: int = 0  # the first encoder window's start (shared/live/turns.py)
    vectors: list[np.ndarray] = field(default_factory=list)  # the encoder's windows so far, from `grid`
    windows_busy: bool = False


@dataclass
class _Closing:
    start: int
    end: int
    transcript: object = None
    voice: np.ndarray | None = None
    waiting: int = 2
    error: str | None = None


class LiveSession:
    def __init__(self, models: LiveModels, config: LiveConfig, emit: Callable[[Event], None],
                 known: Sequence[KnownVoice] = ()):
        """`known`: the enrolled voices that name speakers (resolved once, when the session starts)."""
        self.models = models
        self.config = config
        self._emit = emit
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self.received = 0  # samples fed so far
        self._first_fed: float | None = None  # monotonic time of the first sample
        self.closed = False  # abandoned: audio fed now is ignored, no final is made
        self._buffer = SampleBuffer()  # the open utterance's audio and PREROLL_S before it
        self._endpointer = (
            Endpointer(threshold=config.vad_threshold, neg_threshold=config.vad_neg_threshold,
                       silence_ms=config.silence_ms,
                       max_utterance_s=config.max_utterance_s, prefix_padding_ms=config.prefix_padding_ms)
            if config.turn_detection else None
        )
        self._open: _Open | None = None
        self._next_item = 0
        self._closing: dict[int, _Closing] = {}
        self._dropped: set[int] = set()  # cleared utterances: no final will come
        self._next_final = 0
        hints = config.options.speakers
        self.speakers = SpeakerTracker(config.speaker_threshold, hints, recluster=config.speaker_recluster)
        self._announced: set[str] = set()  # the tracker's labels a SpeakerFound has reported
        self.names = VoiceNames(known if config.options.diarize else (), config.match_threshold)
        self._turns = (TurnDetector(config.turn_threshold)
                       if self._endpointer is not None and config.options.diarize and config.turn_threshold > 0
                       else None)

    # --- input ---
    def feed(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32)
        with self._lock:
            if self.closed:
                return
            if self._first_fed is None:
                self._first_fed = time.monotonic()
            if self._endpointer is None:
                self._feed_manual(samples)
            else:
                self._buffer.append(samples)
                self.received += len(samples)
                for boundary in self._endpointer.feed(samples):
                    self._boundary(boundary)
                self._maybe_turn()
            self._maybe_partial()
            self._trim()

    def _feed_manual(self, samples: np.ndarray) -> None:
        """No turn detection: an utterance opens with the first sample after a commit, and the server
        commits it when it reaches max_utterance_s (the piece past that opens the next one)."""
        cap = max(int(self.config.max_utterance_s * SAMPLE_RATE), 1)
        at = 0
        while at < len(samples):
            if self._open is None:
                self._boundary(Boundary("start", self.received, self.received))
            piece = samples[at : at + self._open.start + cap - self.received]
            self._buffer.append(piece)
            self.received += len(piece)
            at += len(piece)
            if self.received - self._open.start >= cap:
                self._close(self.received)

    def commit(self) -> bool:
        """Close the open utterance now (its final follows). False when nothing is open."""
        with self._lock:
            if self._open is None:
                return False
            if self._endpointer is not None:
                self._endpointer.close(self.received)
            self._end_utterance(self.received)
            return True

    def clear(self) -> None:
        """Drop the open utterance: no final for it (and its voice names no speaker)."""
        with self._lock:
            if self._endpointer is not None:
                self._endpointer.close()
            if self._open is not None:
                self._dropped.add(self._open.item)
            self._open = None
            self._trim()
            self._flush()

    def close(self) -> None:
        """Abandon the session (its client is gone for good): drop the open utterance, ignore further audio."""
        with self._lock:
            self.clear()
            self.closed = True

    def finish(self, timeout: float | None = None) -> bool:
        """End of the stream: close what is open and wait until every final is out (True) or `timeout`."""
        self.commit()
        return self.wait_idle(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._closing, timeout)

    def ahead_s(self) -> float:
        """How far the audio received runs ahead of the wall clock since its first sample."""
        if self._first_fed is None:
            return 0.0
        return self.received / SAMPLE_RATE - (time.monotonic() - self._first_fed)

    @property
    def pending_finals(self) -> int:
        """Utterances closed whose final is not out yet (read without the lock: the event loop asks)."""
        return len(self._closing)

    # --- utterances ---
    def _boundary(self, b: Boundary) -> None:
        if b.kind == "start":
            self._open = _Open(item=self._next_item, start=b.sample, partial_at=b.sample,
                               partial_wall=time.monotonic(), grid=grid_start(b.sample))
            self._next_item += 1
            self._emit(SpeechStarted(self._open.item, round(b.sample / SAMPLE_RATE, 3)))
        elif self._open is not None:
            self._end_utterance(b.sample)

    def _end_utterance(self, end: int) -> None:
        """Close the open utterance at `end`; with its voice watched, first cut it at a speaker change
        its windows show now that nothing follows (one the open-utterance watch had yet to confirm)."""
        utterance = self._open
        if self._turns is not None:
            cut = find_cut(self._turns, self._endpointer, utterance.grid, utterance.vectors, settled=True, until=end)
            if cut is not None and utterance.start < cut < end:
                self._close(cut)
                self._boundary(Boundary("start", cut, cut))
        self._close(end)

    def _close(self, end: int) -> None:
        utterance, self._open = self._open, None
        start = max(utterance.start, self._buffer.start)
        audio = self._buffer.copy(start, end)
        self._emit(SpeechStopped(utterance.item, round(end / SAMPLE_RATE, 3)))
        closing = _Closing(start=start, end=end, waiting=2 if self.config.options.diarize else 1)
        self._closing[utterance.item] = closing
        item, background = utterance.item, self.ahead_s() > AHEAD_S
        self._track(item, self.models.final(audio, self.config.options, background), "transcript")
        if self.config.options.diarize:
            self._track(item, self.models.embed(audio, background), "voice")

    def _track(self, item: int, future: Future, slot: str) -> None:
        future.add_done_callback(lambda f: self._arrived(item, slot, f))

    def _arrived(self, item: int, slot: str, future: Future) -> None:
        with self._lock:
            closing = self._closing[item]
            error = future.exception()
            if error is not None:
                log.warning("live %s of utterance %d failed: %r", slot, item, error)
                closing.error = closing.error or slot
            else:
                setattr(closing, slot, future.result())
            closing.waiting -= 1
            self._flush()

    def _flush(self) -> None:
        """Report the finals that are ready, in utterance order."""
        while True:
            if self._next_final in self._dropped:
                self._dropped.discard(self._next_final)
                self._next_final += 1
                continue
            closing = self._closing.get(self._next_final)
            if closing is None or closing.waiting:
                break
            item = self._next_final
            del self._closing[item]
            self._next_final += 1
            if closing.error == "transcript":
                self._emit(ItemFailed(item, TRANSCRIPTION_FAILED.code, "the utterance could not be transcribed"))
                continue
            self._emit_final(item, closing)
        if not self._closing:
            self._idle.notify_all()

    def _emit_final(self, item: int, closing: _Closing) -> None:
        offset = closing.start / SAMPLE_RATE
        words = [w for seg in closing.transcript.segments for w in seg.words]
        speaker = identity = None
        moves = []
        seconds = (closing.end - closing.start) / SAMPLE_RATE
        if closing.voice is not None and np.any(closing.voice) and words:
            self.speakers.assign(closing.voice, seconds, item)
            moves = self.speakers.settle()
            for label in list(self._announced):
                if label not in self.speakers.labels:  # merged into another speaker
                    self._announced.discard(label)
                    self.names.forget(label)
            speaker = self.speakers.speaker_of(item)
            new = speaker not in self._announced
            self._announced.add(speaker)
            if self.names:
                before = self.names.identity(speaker)
                identity = self.names.update(speaker, self.speakers.centroid(speaker))
                if identity is not None and (before is None or before.voice_id != identity.voice_id):
                    self._emit(SpeakerFound(identity.name, item, identity.voice_id, speaker))
                    new = False
            if new:
                self._emit(SpeakerFound(speaker, item))
        moved = tuple(_shifted(w, offset) for w in words)
        self._emit(FinalUtterance(
            item=item,
            start=round(offset, 3),
            end=round(closing.end / SAMPLE_RATE, 3),
            text="".join(w.word for w in moved).strip(),
            words=moved,
            speaker=speaker if identity is None else identity.name,
            language=closing.transcript.language,
            speaker_id=None if identity is None else identity.voice_id,
            speaker_confidence=None if identity is None else identity.confidence,
        ))
        for move in moves:  # earlier finals whose label later audio corrected
            items = tuple(i for i in move.items if i != item)
            if items:
                to, was = self.names.identity(move.speaker), self.names.identity(move.previous)
                self._emit(SpeakerUpdate(
                    items, move.speaker if to is None else to.name, move.previous if was is None else was.name,
                    None if to is None else to.voice_id, None if to is None else to.confidence,
                ))

    # --- speaker changes inside the open utterance ---
    def _maybe_turn(self) -> None:
        """Embed the open utterance's windows completed since the last look (one request at a time)."""
        utterance = self._open
        if self._turns is None or utterance is None or utterance.windows_busy:
            return
        first = utterance.grid + len(utterance.vectors) * HOP
        end = utterance.grid + ((self.received - SPAN * HOP - utterance.grid) // HOP) * HOP + SPAN * HOP
        if end - first < SPAN * HOP:
            return
        utterance.windows_busy = True
        future = self.models.windows(self._buffer.copy(first, end), self.ahead_s() > AHEAD_S)
        future.add_done_callback(lambda f, u=utterance: self._windows_done(u, f))

    def _windows_done(self, utterance: _Open, future: Future) -> None:
        with self._lock:
            utterance.windows_busy = False
            if self._open is not utterance or self.closed:
                return
            if future.exception() is not None:
                log.warning("live speaker windows failed: %r", future.exception())
                return
            utterance.vectors.extend(future.result())
            cut = find_cut(self._turns, self._endpointer, utterance.grid, utterance.vectors)
            if cut is not None:
                for boundary in self._endpointer.split(cut):
                    self._boundary(boundary)
                self._trim()
            self._maybe_turn()

    # --- partials ---
    def _maybe_partial(self) -> None:
        utterance = self._open
        interval = int(self.config.partial_interval_s * SAMPLE_RATE)
        if not self.config.partials or utterance is None or utterance.partial_busy or self.ahead_s() > AHEAD_S:
            return
        now = time.monotonic()  # and no more often in wall time: audio sent faster buys no more partials
        if (self.received - utterance.partial_at < interval
                or now - utterance.partial_wall < self.config.partial_interval_s):
            return
        utterance.partial_busy, utterance.partial_at, utterance.partial_wall = True, self.received, now
        audio = self._buffer.copy(utterance.start)
        future = self.models.partial(self, audio, self.config.options)
        future.add_done_callback(lambda f, u=utterance: self._partial_done(u, f))

    def _partial_done(self, utterance: _Open, future: Future) -> None:
        with self._lock:
            utterance.partial_busy = False
            if self._open is not utterance or future.cancelled():
                return
            if future.exception() is not None:
                log.warning("live partial failed: %r", future.exception())
                return
            before = [w.word for w in utterance.agreement.tentative]
            new = utterance.agreement.update(future.result())
            tentative = utterance.agreement.tentative
            if new or [w.word for w in tentative] != before:
                offset = utterance.start / SAMPLE_RATE
                self._emit(PartialWords(utterance.item, tuple(_shifted(w, offset) for w in new),
                                        tuple(_shifted(w, offset) for w in tentative)))
            self._maybe_partial()

    def _trim(self) -> None:
        """Drop audio no utterance can need any more."""
        if self._open is not None:
            keep_from = self._open.start
        else:
            keep_from = self.received - int(PREROLL_S * SAMPLE_RATE)
        self._buffer.trim(keep_from)


def _shifted(w: Word, offset: float) -> Word:
    return w.model_copy(update={"start": round(w.start + offset, 3), "end": round(w.end + offset, 3)})
