"""Silero scores a clip once per process: chunking and the embedded diarizer ask for the same clip's
probabilities at the same time (shared/pipeline/vad.py ProbabilityCache)."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np

from shared.media.pcm import ArrayAudio, PcmRef
from shared.pipeline.silero import ProbabilityCache


def _slow(calls: list, value: float):
    def compute():
        calls.append(value)
        time.sleep(0.05)
        return np.full(3, value, np.float32)

    return compute


def test_concurrent_callers_of_one_clip_share_one_computation():
    cache, calls, out = ProbabilityCache(), [], []
    audio = ArrayAudio(np.zeros(1600, np.float32))
    threads = [threading.Thread(target=lambda: out.append(cache.get(audio, _slow(calls, 1.0)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1.0] and len(out) == 3 and all(o is out[0] for o in out)


def test_other_clips_are_scored_anew_and_a_clip_in_memory_is_forgotten_with_it():
    cache, calls = ProbabilityCache(size=2), []
    a, b = ArrayAudio(np.zeros(1600, np.float32)), ArrayAudio(np.zeros(1600, np.float32))
    cache.get(a, _slow(calls, 1.0))
    cache.get(b, _slow(calls, 2.0))  # equal samples, another clip
    assert calls == [1.0, 2.0]
    del a
    gc.collect()
    assert len(cache._entries) == 1


def test_a_stored_clip_is_known_by_its_file(tmp_path):
    cache, calls = ProbabilityCache(), []
    path = tmp_path / "clip.pcm"
    np.zeros(1600, "<f4").tofile(path)
    cache.get(PcmRef.of(path), _slow(calls, 1.0))
    cache.get(PcmRef.of(path), _slow(calls, 2.0))  # another reference to the same file
    assert calls == [1.0]


def test_a_failed_computation_is_not_kept():
    cache, calls = ProbabilityCache(), []
    audio = ArrayAudio(np.zeros(1600, np.float32))

    def boom():
        raise RuntimeError("onnx")

    try:
        cache.get(audio, boom)
    except RuntimeError:
        pass
    assert cache.get(audio, _slow(calls, 1.0))[0] == 1.0 and calls == [1.0]


def test_split_and_the_diarizers_regions_score_the_clip_once(worker, monkeypatch):
    import shared.pipeline.silero as silero

    scored = []
    real = silero.score_clip
    monkeypatch.setattr(silero, "score_clip", lambda audio: scored.append(audio) or real(audio))
    audio = ArrayAudio((np.random.default_rng(0).standard_normal(16000 * 3) * 0.01).astype(np.float32))
    worker.vad.split(audio)
    worker.vad.speech_regions(audio, threshold=0.15, neg_threshold=0.05)
    assert len(scored) == 1
