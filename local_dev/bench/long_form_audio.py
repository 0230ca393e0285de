"""The long-form benchmark's audio: recordings of any length assembled from real voices, as mp3.

Sources (the team's development data, ``../shared/data`` beside the checkout, or env ``BENCH_DATA_DIR``):
every LibriSpeech utterance in ``librispeech_voices/`` (speaker id = the first number of the file name)
and, sprinkled in now and then, the LibriVox reader's 5 utterances and JFK's clip. The recording is a
series of conversations: each has 2-6 speakers taking turns (whole utterances) with gaps of 0.2-2 s of
faint noise and a level change of up to +-6 dB per turn. Clips are used least-used first, so a short
recording repeats nothing and a long one cycles through everything before it repeats (65 minutes of
distinct speech: a 4-hour file uses each clip about 4 times). Deterministic from the seed.

The mp3 (64 kbps, 16 kHz mono, libmp3lame through PyAV) is encoded turn by turn: only one clip and
one gap are in memory at a time, whatever the length.

References: every distinct clip is transcribed once, alone, with plain faster-whisper (tiny.en, beam 5);
the texts are cached in refs.json, and a recording's reference is its placements' texts in order.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import av
import numpy as np

from local_dev.eval.scoring import normalize_words
from shared.pipeline.transcriber import resolve_whisper_model

SR = 16_000
PLAN_VERSION = 1
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"  # beside the checkout
SPEAKERS_RANGE = (2, 6)  # speakers per conversation
CONVERSATION_S = (120.0, 480.0)  # target length of one conversation
GAP_RANGE = (0.2, 2.0)  # seconds of (near) silence before a turn
GAIN_DB_RANGE = (-6.0, 6.0)
SPRINKLE_P = 0.05  # chance that a turn is one of the known clips (LibriVox reader, JFK)
GAP_NOISE_RMS = 4e-4  # ~-68 dBFS between turns, not digital silence
FADE_S = 0.01
PEAK = 0.99  # a gain that would clip is lowered to this peak
LIBRIVOX = "librivox_sense_sensibility"
LIBRIVOX_UTTERANCES = ["0870", "0880", "0890", "0920", "0930"]


@dataclass(frozen=True)
class Clip:
    key: str  # path relative to the data folder
    speaker: str
    seconds: float
    kind: str = "voice"  # "voice" (conversation material) or "known" (sprinkled in)


@dataclass(frozen=True)
class Placement:
    key: str
    speaker: str
    conversation: int
    gap: float  # seconds before the clip
    gain_db: float


def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "librispeech_voices").is_dir():
        raise FileNotFoundError(
            f"the long-form benchmark needs the development data folder {path} (with librispeech_voices/, "
            f"{LIBRIVOX}/ and jfk/), beside the checkout as ../shared/data; set BENCH_DATA_DIR to point elsewhere"
        )
    return path


def parse_size(text: str) -> float:
    """'15m', '1h', '4h', '90s', '1h30m', or plain seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"not a size: {text!r} (use e.g. 2m, 15m, 1h, 4h, 90s)")
    seconds = sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)
    if seconds <= 0:
        raise ValueError(f"not a size: {text!r}")
    return seconds


def size_label(seconds: float) -> str:
    s = int(round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"


def catalog(root: Path) -> list[Clip]:
    """Every usable clip with its speaker and duration (read from the headers, nothing decoded)."""
    def seconds(path: Path) -> float:
        with av.open(str(path)) as c:
            stream = c.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return float(c.duration) / 1e6

    clips = []
    for path in sorted((root / "librispeech_voices").rglob("*.flac")):
        speaker = "ls" + path.name.split("-")[0]
        clips.append(Clip(str(path.relative_to(root)), speaker, round(seconds(path), 3)))
    for utt in LIBRIVOX_UTTERANCES:
        path = root / LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{utt}.wav"
        if path.exists():
            clips.append(Clip(str(path.relative_to(root)), "librivox_reader", round(seconds(path), 3), "known"))
    jfk = root / "jfk" / "jfk_16k.wav"
    if jfk.exists():
        clips.append(Clip(str(jfk.relative_to(root)), "jfk", round(seconds(jfk), 3), "known"))
    return clips


def plan_recording(clips: Iterable[Clip], seconds: float, seed: int) -> list[Placement]:
    """Turns until `seconds` of audio (gaps included): conversations of 2-6 speakers, picked least used
    first; within one, each turn goes to another speaker who still has a clip not yet heard in it (the
    conversation ends when nobody has), up to its target length. Pure and deterministic."""
    rng = random.Random(seed)
    clips = list(clips)
    duration = {c.key: c.seconds for c in clips}
    by_speaker: dict[str, list[Clip]] = {}
    for c in clips:
        if c.kind == "voice":
            by_speaker.setdefault(c.speaker, []).append(c)
    known = [c for c in clips if c.kind != "voice"]
    if len(by_speaker) < SPEAKERS_RANGE[0]:
        raise ValueError(f"need clips of at least {SPEAKERS_RANGE[0]} speakers, got {len(by_speaker)}")
    speaker_use: Counter[str] = Counter()
    clip_use: Counter[str] = Counter()
    plan: list[Placement] = []
    total = 0.0
    conversation = 0

    def least_used(candidates: list[Clip]) -> Clip:
        return min(candidates, key=lambda c: (clip_use[c.key], rng.random()))

    while total < seconds:
        k = rng.randint(*SPEAKERS_RANGE)
        order = sorted(by_speaker, key=lambda s: (speaker_use[s], rng.random()))
        cast = order[:k]
        target = rng.uniform(*CONVERSATION_S)
        heard: set[str] = set()
        length = 0.0
        previous = None
        while length < target and total < seconds:
            if known and plan and rng.random() < SPRINKLE_P:
                clip = least_used(known)
            else:
                fresh = [s for s in cast if s != previous and any(c.key not in heard for c in by_speaker[s])]
                if not fresh:
                    break
                speaker = rng.choice(fresh)
                clip = least_used([c for c in by_speaker[speaker] if c.key not in heard])
            gap = round(rng.uniform(*GAP_RANGE), 3) if plan else 0.5
            plan.append(Placement(clip.key, clip.speaker, conversation, gap,
                                  round(rng.uniform(*GAIN_DB_RANGE), 2)))
            heard.add(clip.key)
            clip_use[clip.key] += 1
            speaker_use[clip.speaker] += 1
            previous = clip.speaker
            step = gap + duration[clip.key]
            length += step
            total += step
        conversation += 1
    return plan


def load_clip(path: Path) -> np.ndarray:
    """Decode to 16 kHz mono float32."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
        parts = [o.to_ndarray().reshape(-1) for f in container.decode(stream) for o in resampler.resample(f)]
        parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


class Mp3Writer:
    """Streams float32 mono pieces into an mp3 (libmp3lame through PyAV)."""

    def __init__(self, path: Path, bit_rate: int = 64_000):
        self.container = av.open(str(path), "w", format="mp3")
        self.stream = self.container.add_stream("libmp3lame", rate=SR, layout="mono")
        self.stream.bit_rate = bit_rate
        self.samples = 0

    def write(self, x: np.ndarray) -> None:
        if not len(x):
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32).reshape(1, -1),
                                           format="flt", layout="mono")
        frame.sample_rate = SR
        frame.pts = self.samples
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.samples += len(x)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def _fade(x: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * SR), len(x) // 2)
    if n:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))).astype(np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def render(plan: list[Placement], root: Path, mp3: Path, seed: int) -> dict:
    """Encode `plan` into `mp3`, one gap and one clip at a time; returns the placements with their times."""
    tmp = mp3.with_name(mp3.name + ".part")
    writer = Mp3Writer(tmp)
    rows = []
    try:
        for i, p in enumerate(plan):
            noise = np.random.default_rng([seed, i])
            writer.write((noise.standard_normal(int(round(p.gap * SR))) * GAP_NOISE_RMS).astype(np.float32))
            clip = load_clip(root / p.key)
            gain = 10 ** (p.gain_db / 20)
            peak = float(np.abs(clip).max()) if len(clip) else 0.0
            if peak * gain > PEAK:
                gain = PEAK / peak
            start = writer.samples
            writer.write(_fade(clip * np.float32(gain)))
            rows.append({**asdict(p), "gain_db": round(20 * np.log10(gain), 2),
                         "start": round(start / SR, 3), "end": round(writer.samples / SR, 3)})
        writer.write((np.random.default_rng([seed, len(plan)]).standard_normal(SR // 2) * GAP_NOISE_RMS)
                     .astype(np.float32))
        samples = writer.samples
    finally:
        writer.close()
    tmp.replace(mp3)
    return {"duration": round(samples / SR, 3), "placements": rows}


def build_recording(seconds: float, seed: int, out_dir: Path, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """The cached mp3 and its description for this length and seed (built if missing or stale)."""
    label = size_label(seconds)
    mp3 = out_dir / f"long_{label}_seed{seed}.mp3"
    meta_path = mp3.with_suffix(".json")
    if mp3.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("version") == PLAN_VERSION and meta.get("seed") == seed and meta.get("requested") == seconds:
            return mp3, meta
    root = data_dir()
    plan = plan_recording(catalog(root), seconds, seed)
    log(f"building {mp3.name}: {len(plan)} turns ...")
    rendered = render(plan, root, mp3, seed)
    speakers = sorted({p.speaker for p in plan})
    meta = {"version": PLAN_VERSION, "seed": seed, "requested": seconds, "label": label,
            "duration": rendered["duration"], "sample_rate": SR, "bit_rate": 64_000,
            "speakers_placed": len(speakers), "speakers": speakers,
            "conversations": len({p.conversation for p in plan}), "turns": len(plan),
            "distinct_clips": len({p.key for p in plan}), "placements": rendered["placements"]}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return mp3, meta


def reference_texts(keys: Iterable[str], cache_path: Path, log: Callable[[str], None] = print) -> dict[str, dict]:
    """{clip key: {"text", "words"}} for `keys`, transcribing (once, cached) those not in `cache_path`."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    missing = sorted(set(keys) - set(cache))
    if missing:
        from faster_whisper import WhisperModel  # ctranslate2: loaded only when references are missing

        root = data_dir()
        log(f"reference: transcribing {len(missing)} clips alone with faster-whisper tiny.en "
            f"(cached in {cache_path.name})")
        model = WhisperModel(resolve_whisper_model("tiny.en"), device="cpu", compute_type="int8")

        def save() -> None:
            tmp = cache_path.with_name(cache_path.name + ".part")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
            tmp.replace(cache_path)

        for i, key in enumerate(missing, 1):
            segments, _ = model.transcribe(load_clip(root / key), beam_size=5, language="en")
            text = " ".join(s.text.strip() for s in segments).strip()
            cache[key] = {"text": text, "words": len(normalize_words(text))}
            if i % 25 == 0 or i == len(missing):
                save()
                log(f"  {i}/{len(missing)}")
    return {k: cache[k] for k in set(keys)}
