"""`make bench-abuse`'s audio and payloads (local_dev/bench/abuse.py, abuse_attacks.py): real speech from the
team's dev recordings (benches may read them, tests may not), as PCM16, as one long WebM/Opus stream, as a
WAV file; and what each attack builds before its clock starts."""

from __future__ import annotations

import base64
import io
import itertools
import json
import wave
from pathlib import Path

import av
import httpx
import numpy as np

from shared.media.decode import decode

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"  # the team's dev audio: benches may read it, tests may not
# five LibriVox sentences of one reader (3-7 s each), then JFK (11 s): utterances with pauses between them
SPEECH = [*sorted((DATA / "librivox_sense_sensibility").glob("sense_and_sensibility_*.wav")),
          DATA / "jfk" / "jfk_16k.wav"]
RATE = 16_000
GAP_S = 0.8  # silence between two recordings


def speech(seconds: float) -> np.ndarray:
    """`seconds` of real speech (16 kHz mono float32): the dev recordings one after another, looped."""
    recordings = [decode(p).samples for p in SPEECH if p.exists()]
    if not recordings:
        raise FileNotFoundError(f"no dev recordings under {DATA}")
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    parts, total = [], 0
    for samples in itertools.cycle(recordings):
        parts += [samples, gap]
        total += len(samples) + len(gap)
        if total >= seconds * RATE:
            break
    return np.concatenate(parts)[: int(seconds * RATE)]


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    at = np.arange(int(len(samples) * rate / RATE)) * (RATE / rate)
    return np.interp(at, np.arange(len(samples)), samples).astype(np.float32)


def webm_opus(samples: np.ndarray, times: int, bit_rate: int = 24_000) -> bytes:
    """One WebM/Opus stream of `samples` played `times` over, as a browser's MediaRecorder makes it (48 kHz,
    mono), encoded 1 s at a time."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48_000, layout="mono")
        stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=48_000)
        pts = 0

        def encode(pieces) -> None:
            nonlocal pts
            for piece in pieces:
                if piece is not None:
                    piece.pts, pts = pts, pts + piece.samples
                for packet in stream.encode(piece):
                    container.mux(packet)

        for _ in range(times):
            for at in range(0, len(samples), RATE):
                frame = av.AudioFrame.from_ndarray(samples[None, at : at + RATE], format="flt", layout="mono")
                frame.sample_rate = RATE
                encode(resampler.resample(frame))
        encode([*resampler.resample(None), None])
    return out.getvalue()


def wav_bytes(samples: np.ndarray, times: int) -> bytes:
    """A WAV file of `samples` played `times` over."""
    out, data = io.BytesIO(), pcm16(samples)
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        for _ in range(times):
            w.writeframes(data)
    return out.getvalue()


def build_payload(name: str, url: str, key: str | None) -> dict:
    """What attack `name` needs before its clock starts (sync-disconnect: a 10-minute clip uploaded)."""
    payload: dict = {"url": url, "key": key}
    if name == "realtime-manual":
        audio = pcm16(resample(speech(60), 24_000))
        step = 48_000  # 1 s of 24 kHz PCM16
        payload["appends"] = [json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(audio[i : i + step]).decode()})
                              for i in range(0, len(audio), step)]
    elif name == "webm-flood":
        payload["webm"] = webm_opus(speech(60), times=10)  # 10 minutes, about 1.8 MB at 24 kbit/s
    elif name == "deflate-bomb":
        payload["bomb"] = bytes(16 << 20)  # 16 MiB of zeros: about 16 KiB with permessage-deflate
    elif name == "parked-churn":
        payload["second"] = pcm16(speech(1))
    elif name == "sync-disconnect":
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = httpx.post(url.rstrip("/") + "/api/audio", headers=headers, timeout=300, trust_env=False,
                            files={"file": ("long.wav", wav_bytes(speech(60), times=10), "audio/wav")})
        answer.raise_for_status()
        payload["clip_id"] = answer.json()["clip_id"]
    return payload
