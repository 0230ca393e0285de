"""The benchmark's audio: a >=5 min two-speaker conversation with an exact reference.

    python -m local_dev.bench.conversation_audio [OUT_DIR] [--seconds 320] [--seed 1234]

Built from the team's development data (``../shared/data`` beside the checkout, or env
``BENCH_DATA_DIR``): the LibriVox reader's 5 utterances and JFK's 11 s clip (cut at its 3 natural
pauses, and also used whole) are placed one after another in varied orders, mostly alternating
speakers but sometimes one speaker twice running, with pauses of 0.3-1.5 s (about a quarter shorter than
600 ms, so VAD chunking must cope with short gaps). Every word and every speech region is known by
construction, so WER and DER are exact. Deterministic: same seed, same bytes.

Writes into OUT_DIR (default ``bench-out/``, git-ignored):
  bench_conversation.wav       16 kHz mono 16-bit PCM
  bench_conversation.ref.txt   the reference transcript (one line per turn, in order)
  bench_conversation.rttm      the reference diarization (one SPEAKER line per speech region)
  bench_conversation.json      turns [{speaker, start, end, text, source}] and the build parameters

Only real recorded speech with word-for-word references is used: the pyaudioanalysis material has no
transcript, so it is left out (its words could not be scored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.media.decode import decode

SR = 16000
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT_DIR = REPO_ROOT / "bench-out"
NAME = "bench_conversation"
URI = "bench_conversation"

LIBRI = "librivox_sense_sensibility"
LIBRI_UTTERANCES = ["0870", "0880", "0890", "0920", "0930"]

# JFK's clip: speech regions between its natural pauses (checked on 20 ms frame energies; the
# pauses at 4.3-5.4 s and 7.55-8.15 s sit at the recording's ~-40 dBFS floor). Text: jfk/ref.txt.
JFK_PIECES = [
    (0.25, 4.40, "And so, my fellow Americans, ask not"),
    (5.30, 7.65, "what your country can do for you,"),
    (8.10, 10.70, "ask what you can do for your country."),
]

PAUSE_RANGE = (0.3, 1.5)  # seconds between turns, uniform
GAIN_DB_RANGE = (-3.0, 3.0)  # each placed clip gets a random gain, so repeats are not bit-identical
GAP_NOISE_RMS = 4e-4  # ~-68 dBFS faint noise between turns (not digital silence)
FADE = 0.01  # raised-cosine fade at clip edges


@dataclass
class Unit:
    speaker: str
    audio: np.ndarray
    text: str
    source: str
    regions: list[tuple[float, float]]  # speech regions, seconds relative to the clip start


def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA_DIR", DEFAULT_DATA_DIR))
    missing = [d for d in (LIBRI, "jfk") if not (path / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"benchmark audio needs the development data folder {path} (with {LIBRI}/ and jfk/; "
            f"missing: {', '.join(missing)}). It lives beside the checkout as ../shared/data; "
            "set BENCH_DATA_DIR to point elsewhere."
        )
    return path


def trim(x: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Keep from the first to the last run of 3+ 20 ms frames 6 dB above the clip's noise floor
    (10th percentile of frame energies), plus a margin. tests/fixtures/make_fixtures.py uses it too."""
    hop = SR // 50
    n = len(x) // hop
    db = 20 * np.log10(np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(1)) + 1e-9)
    floor = np.percentile(db[db > -150], 10)
    loud = db > floor + 6
    run3 = loud[:-2] & loud[1:-1] & loud[2:]
    first = int(np.argmax(run3))
    last = len(run3) - 1 - int(np.argmax(run3[::-1])) + 2
    return x[max(0, first * hop - int(margin * SR)) : min(len(x), (last + 1) * hop + int(margin * SR))]


def load_units(root: Path) -> list[Unit]:
    units = []
    for key in LIBRI_UTTERANCES:
        stem = f"sense_and_sensibility_01_austen_64kb-{key}"
        clip = trim(decode(root / LIBRI / f"{stem}.wav").samples)
        text = (root / LIBRI / f"{stem}.ref.txt").read_text().strip()
        units.append(Unit("librivox_reader", clip, text, f"{LIBRI}/{stem}.wav", [(0.0, len(clip) / SR)]))
    jfk = decode(root / "jfk" / "jfk_16k.wav").samples
    for i, (a, b, text) in enumerate(JFK_PIECES):
        clip = jfk[int(a * SR) : int(b * SR)]
        units.append(Unit("jfk", clip, text, f"jfk/jfk_16k.wav#{a}-{b}", [(0.0, len(clip) / SR)]))
    # the whole clip as one turn: its two inner pauses (1.1 s and 0.6 s) stay, and are not speech
    a0, b0 = JFK_PIECES[0][0], JFK_PIECES[-1][1]
    units.append(
        Unit(
            "jfk",
            jfk[int(a0 * SR) : int(b0 * SR)],
            " ".join(p[2] for p in JFK_PIECES),
            f"jfk/jfk_16k.wav#{a0}-{b0}",
            [(a - a0, b - a0) for a, b, _ in JFK_PIECES],
        )
    )
    return units


def _fade(x: np.ndarray) -> np.ndarray:
    n = int(FADE * SR)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))).astype(np.float32)
    y = x.copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def plan_conversation(units: list[Unit], seconds: float, rng: np.random.Generator) -> list[tuple[Unit, float]]:
    """(unit, pause before it) until `seconds` of audio: each speaker draws from its own shuffled
    pool (refilled when empty); the next turn switches speaker with p=0.75, else the same one goes on."""
    by_speaker: dict[str, list[Unit]] = {}
    for u in units:
        by_speaker.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_speaker)
    pools: dict[str, list[Unit]] = {s: [] for s in speakers}
    plan: list[tuple[Unit, float]] = []
    total = 0.0
    speaker = speakers[0]
    last_unit = None
    while total < seconds:
        if plan and rng.random() < 0.75:
            speaker = speakers[1 - speakers.index(speaker)]
        if not pools[speaker]:
            pools[speaker] = [by_speaker[speaker][i] for i in rng.permutation(len(by_speaker[speaker]))]
            if pools[speaker][-1] is last_unit and len(pools[speaker]) > 1:
                pools[speaker].reverse()  # never the very same clip twice in a row
        unit = pools[speaker].pop()
        pause = float(np.round(rng.uniform(*PAUSE_RANGE), 3)) if plan else 0.5
        plan.append((unit, pause))
        total += pause + len(unit.audio) / SR
        last_unit = unit
    return plan


def build_bench_audio(out_dir: Path | str = DEFAULT_OUT_DIR, seconds: float = 320.0, seed: int = 1234):
    """Build the benchmark conversation into `out_dir`; returns (wav_path, ref_text, ref_rttm_path)."""
    root = data_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = plan_conversation(load_units(root), seconds, rng)

    pieces: list[np.ndarray] = []
    turns: list[dict] = []
    speech = []  # (speaker, start, end) speech regions in samples
    pos = 0
    for unit, pause in plan:
        gap = int(round(pause * SR))
        pieces.append(np.zeros(gap, np.float32))
        pos += gap
        gain = 10 ** (rng.uniform(*GAIN_DB_RANGE) / 20)
        clip = _fade(unit.audio * np.float32(gain))
        pieces.append(clip)
        turns.append(
            {
                "speaker": unit.speaker,
                "start": round(pos / SR, 4),
                "end": round((pos + len(clip)) / SR, 4),
                "pause_before": pause,
                "text": unit.text,
                "source": unit.source,
            }
        )
        for a, b in unit.regions:
            speech.append((unit.speaker, pos + int(round(a * SR)), pos + int(round(b * SR))))
        pos += len(clip)
    tail = int(0.5 * SR)
    pieces.append(np.zeros(tail, np.float32))
    audio = np.concatenate(pieces)
    mask = np.ones(len(audio), bool)
    for t in turns:
        mask[int(round(t["start"] * SR)) : int(round(t["end"] * SR))] = False
    audio[mask] = (rng.standard_normal(int(mask.sum())) * GAP_NOISE_RMS).astype(np.float32)

    wav_path = write_wav(out_dir / f"{NAME}.wav", audio)

    ref_text = "\n".join(t["text"] for t in turns) + "\n"
    (out_dir / f"{NAME}.ref.txt").write_text(ref_text)
    rttm_path = out_dir / f"{NAME}.rttm"
    rttm_path.write_text(
        "".join(
            f"SPEAKER {URI} 1 {s / SR:.3f} {(e - s) / SR:.3f} <NA> <NA> {spk} <NA> <NA>\n"
            for spk, s, e in speech
        )
    )
    pauses = [t["pause_before"] for t in turns[1:]]
    meta = {
        "audio": wav_path.name,
        "sample_rate": SR,
        "duration": round(len(audio) / SR, 4),
        "seed": seed,
        "num_speakers": len({t["speaker"] for t in turns}),
        "num_turns": len(turns),
        "num_words": len(ref_text.split()),
        "speech_seconds": {
            spk: round(sum(e - s for sp, s, e in speech if sp == spk) / SR, 2) for spk in sorted({t["speaker"] for t in turns})
        },
        "pauses_under_600ms": sum(p < 0.6 for p in pauses),
        "speaker_changes": sum(a["speaker"] != b["speaker"] for a, b in zip(turns, turns[1:])),
        "turns": turns,
    }
    (out_dir / f"{NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return wav_path, ref_text, rttm_path


SILENT_NAME = "bench_silence_heavy"


def build_silence_heavy_audio(out_dir: Path | str = DEFAULT_OUT_DIR, seconds: float = 300.0, seed: int = 7):
    """A mostly silent recording, for what looking past the VAD costs (shared/pipeline/vad.py loud_regions):
    four utterances (the reader's 0870, 0890, 0920 and JFK's clip, -26 dBFS, ~45 s of speech) spread over
    `seconds` of a steady pink noise floor at -55 dBFS, with 40 keyboard clicks and thumps (-30 dBFS,
    10-80 ms) and two 6 s tunes from a phone speaker (-38 dBFS) between them. Returns (wav, ref_text)."""
    root = data_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)

    def at(x: np.ndarray, dbfs: float) -> np.ndarray:
        return x * 10 ** (dbfs / 20) / np.sqrt(np.mean(np.square(x, dtype=np.float64)))

    spectrum = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))
    audio = at(np.fft.irfft(spectrum, n), -55.0)
    sources = [(f"{LIBRI}/sense_and_sensibility_01_austen_64kb-{u}.wav", f"{LIBRI}/sense_and_sensibility_01_austen_64kb-{u}.ref.txt")
               for u in ("0870", "0890", "0920")] + [("jfk/jfk_16k.wav", "jfk/ref.txt")]
    texts = []
    for k, (wav, ref) in enumerate(sources):
        start = int(seconds * (0.07 + 0.77 * k / (len(sources) - 1)) * SR)
        clip = decode(root / wav).samples
        audio[start : start + len(clip)] += at(clip, -26.0)
        texts.append((root / ref).read_text().strip())
    for t in rng.uniform(0.1 * seconds, 0.97 * seconds, 40):
        i, m = int(t * SR), int(rng.uniform(0.01, 0.08) * SR)
        audio[i : i + m] += at(rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 4)), -30.0)
    tt = np.arange(6 * SR) / SR
    tune = np.zeros_like(tt)
    for k in range(12):
        a, b = int(k * 0.5 * SR), int((k * 0.5 + 0.45) * SR)
        tune[a:b] += np.sin(2 * np.pi * [523, 587, 659, 698, 784, 880][k % 6] * tt[a:b]) * np.exp(-4 * (tt[a:b] - tt[a]))
    for t in (0.2 * seconds, 0.67 * seconds):
        audio[int(t * SR) : int(t * SR) + len(tt)] += at(tune, -38.0)
    wav_path = write_wav(out_dir / f"{SILENT_NAME}.wav", audio)
    ref_text = "\n".join(texts) + "\n"
    (out_dir / f"{SILENT_NAME}.ref.txt").write_text(ref_text)
    return wav_path, ref_text


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """16-bit PCM mono WAV at SR."""
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build the benchmark conversation audio + references.")
    ap.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    ap.add_argument("--seconds", type=float, default=320.0, help="minimum length (default 320)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    try:
        wav, text, rttm = build_bench_audio(args.out_dir, args.seconds, args.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads((wav.parent / f"{NAME}.json").read_text())
    print(
        f"{wav}: {meta['duration']:.1f} s, {meta['num_turns']} turns ({meta['speaker_changes']} speaker changes, "
        f"{meta['pauses_under_600ms']} pauses < 600 ms), {meta['num_words']} words, speech {meta['speech_seconds']}"
    )
    print(f"{rttm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
