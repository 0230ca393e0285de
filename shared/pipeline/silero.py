"""Silero VAD's speech probabilities: the model's state across calls, the high-pass it hears the audio
through, block-by-block scoring of a clip, and a per-process cache so one clip is scored once.

shared/pipeline/vad.py turns the probabilities into speech regions and chunks; the live endpointer
(shared/live/endpoint.py) scores a stream with SileroState as it arrives.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np
from scipy.signal import butter, sosfilt

from shared.core.domain import SAMPLE_RATE
from shared.media.pcm import AudioSource, PcmRef, as_audio

WINDOW = 512  # samples Silero scores at a time (32 ms)
CONTEXT = 64  # samples of the previous window it sees with each one
BLOCK_WINDOWS = 10_000  # windows per ONNX call, as faster-whisper batches them (320 s of audio)
HIGHPASS_HZ = 80.0  # Silero hears the audio above this (see SileroState)
HIGHPASS_SOS = butter(4, HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE, output="sos")


class SileroState:
    """Silero's recurrent state across calls: score windows now, more of the same audio later.

    `score` takes consecutive (n, 512) windows and carries the LSTM state, the 64-sample context and the
    high-pass filter's state into the next call, so scoring a clip in blocks (or a live stream as it
    arrives) gives the same numbers as one call over the whole clip.

    The audio is high-passed at HIGHPASS_HZ first. Low-frequency rumble (ventilation, traffic, handling
    noise) under a voice that has little energy of its own down there (a far or band-limited microphone)
    makes Silero score plainly audible speech under 0.05; speech carries almost nothing below 80 Hz, so
    removing it costs nothing (measured: a reverberant phone-band reader over rumble, 20 dB below its
    speech, 13.8 of 20.1 s missed at 0.15 -> 0.4 s; the eval's sets and the real recordings unchanged
    within 1 s).
    """

    def __init__(self):
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._zi = np.zeros((HIGHPASS_SOS.shape[0], 2))

    def score(self, windows: np.ndarray) -> np.ndarray:
        if len(windows) == 0:
            return np.zeros(0, np.float32)
        filtered, self._zi = sosfilt(HIGHPASS_SOS, windows.reshape(-1), zi=self._zi)
        windows = filtered.astype(np.float32).reshape(windows.shape)
        contexts = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        self._context = windows[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([contexts, windows], 1), "h": self._h, "c": self._c}
        )
        return np.asarray(probs, np.float32).reshape(-1)


def window_blocks(audio: AudioSource):
    """The clip as (windows, 512) arrays of up to BLOCK_WINDOWS windows, zero-padded at the end to one
    whole extra window, as faster-whisper pads it."""
    n_windows = audio.num_samples // WINDOW + 1
    for first in range(0, n_windows, BLOCK_WINDOWS):
        count = min(BLOCK_WINDOWS, n_windows - first)
        block = np.zeros(count * WINDOW, np.float32)
        samples = audio.read(first * WINDOW, (first + count) * WINDOW)
        block[: len(samples)] = samples
        yield block.reshape(count, WINDOW)


def score_clip(audio: AudioSource) -> np.ndarray:
    state = SileroState()
    out = [state.score(windows) for windows in window_blocks(audio)]
    probs = np.concatenate(out) if out else np.zeros(0, np.float32)
    probs.flags.writeable = False  # shared by every caller of the same clip
    return probs


class ProbabilityCache:
    """Silero's probabilities of the last few clips, computed once per process.

    Chunking (vad_split) and the embedded diarizer score the same recording at the same time (the
    pipeline submits both at once): the second caller waits for the first one's result instead of
    scoring the clip again (~0.7 s of CPU on the bench's 5.5 minutes). A stored PCM file is known by
    its path, length and modification time; audio in memory by the object itself, and its entry goes
    when the object does.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, Future] = OrderedDict()

    def get(self, audio: AudioSource, compute) -> np.ndarray:
        key = self._key(audio)
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = Future()
                if not isinstance(audio, PcmRef):
                    weakref.finalize(audio, self._forget, key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
        if owner:
            try:
                entry.set_result(compute())
            except BaseException as exc:
                self._forget(key)
                entry.set_exception(exc)
        return entry.result()

    def _forget(self, key: tuple) -> None:
        with self._lock:
            self._entries.pop(key, None)

    @staticmethod
    def _key(audio: AudioSource) -> tuple:
        if isinstance(audio, PcmRef):
            return ("pcm", audio.path, audio.num_samples, os.stat(audio.path).st_mtime_ns)
        return ("memory", id(audio), audio.num_samples)


_PROBABILITIES = ProbabilityCache()


def clip_probabilities(audio: AudioSource | np.ndarray) -> np.ndarray:
    """Silero's probability for every 32 ms window of a clip, scored once per process (read-only)."""
    audio = as_audio(audio)
    return _PROBABILITIES.get(audio, lambda: score_clip(audio))
