"""Helpers for the /v1/realtime tests: the fixture as 24 kHz PCM16, and a session driven by the official
`openai` SDK's realtime client (events read on a thread while audio is sent, each with its arrival time)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
from audio_fixtures import TWO_SPEAKERS, normalize_words
from openai import OpenAI
from websockets.exceptions import ConnectionClosed

RATE = 24000
BYTES_PER_MS = RATE * 2 // 1000


def pcm24(path=TWO_SPEAKERS) -> bytes:
    """The file as 24 kHz mono PCM16 (little-endian), what a Realtime client sends by default."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    pieces = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(pieces).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return b"\0" * (ms * BYTES_PER_MS)


def span(pcm: bytes, start_s: float, end_s: float) -> bytes:
    a, b = int(start_s * 1000) * BYTES_PER_MS, int(end_s * 1000) * BYTES_PER_MS
    return pcm[a:b]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sdk(url: str, api_key: str = "no-key") -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=api_key)


def connect(client: OpenAI):
    return client.realtime.connect(extra_query={"intent": "transcription"})


@dataclass
class Session:
    """A connection with a reader thread: `events` are (arrival time, SDK event), `sent` the stream
    position (ms of audio) reached at each time, for latencies."""

    connection: object
    events: list = field(default_factory=list)
    sent: list = field(default_factory=list)
    close_code: int | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Session:
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        try:
            while True:
                event = self.connection.recv()
                with self._cond:
                    self.events.append((time.monotonic(), event))
                    self._cond.notify_all()
        except ConnectionClosed as exc:
            with self._cond:
                self.close_code = exc.rcvd.code if exc.rcvd else 1006
                self._cond.notify_all()

    def of(self, kind: str) -> list:
        with self._cond:
            return [e for _t, e in self.events if e.type == kind]

    def timed(self, kind: str) -> list:
        with self._cond:
            return [(t, e) for t, e in self.events if e.type == kind]

    def wait(self, predicate: Callable[[Session], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0 or (self.close_code is not None and not predicate(self)):
                    kinds = [e.type for _t, e in self.events]
                    raise AssertionError(f"timed out (close {self.close_code}); events: {kinds[-40:]}")
                self._cond.wait(min(left, 0.5))

    def count(self, kind: str) -> int:
        return sum(1 for _t, e in self.events if e.type == kind)

    def errors(self) -> list[str]:
        return [e.error.code for e in self.of("error")]

    def wait_error(self, code: str, timeout: float = 30.0):
        before = self.errors().count(code)
        self.wait(lambda s: s.errors().count(code) > before, timeout)
        return self.of("error")[-1]

    # --- sending ---
    def send(self, event: dict) -> None:
        self.connection.send(event)

    def append(self, pcm: bytes, piece_ms: int = 200, speed: float = 4.0) -> None:
        """Append `pcm` in pieces of `piece_ms`, `speed` times faster than real time."""
        step = piece_ms * BYTES_PER_MS
        done = sum(ms for _t, ms in self.sent[-1:])
        for at in range(0, len(pcm), step):
            piece = pcm[at : at + step]
            self.connection.input_audio_buffer.append(audio=b64(piece))
            done += len(piece) / BYTES_PER_MS
            self.sent.append((time.monotonic(), done))
            time.sleep(piece_ms / 1000 / speed)

    def sent_at(self, stream_ms: float) -> float:
        """When the audio up to `stream_ms` had been sent."""
        return next(t for t, ms in self.sent if ms >= stream_ms - 1)

    def settled(self) -> bool:
        """Every utterance that started has its final (or failure)."""
        finals = self.count("conversation.item.input_audio_transcription.completed") + self.count(
            "conversation.item.input_audio_transcription.failed")
        return finals == self.count("input_audio_buffer.committed") and (
            self.count("input_audio_buffer.speech_started") <= self.count("input_audio_buffer.committed"))


def words_of(text: str) -> list[str]:
    return normalize_words(text)


def word_recall(reference: str, heard: str) -> float:
    """The share of the reference's words that were heard (a bag of words, each counted once)."""
    ref, got = words_of(reference), words_of(heard)
    pool = list(got)
    hits = 0
    for w in ref:
        if w in pool:
            pool.remove(w)
            hits += 1
    return hits / max(1, len(ref))
