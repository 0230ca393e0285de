"""The live endpointer's second look (shared/live/endpoint.py): utterances with and without it, against
the file pipeline's regions (shared/pipeline/vad.py, with and without its own second look) on the same
files in the same run.

A live session is replayed as the server runs it: audio fed 0.5 s at a time to the endpointer with the
service's STREAM_* settings, utterances cut where it cuts them. Per group of files: seconds of reference
speech outside every utterance (or region), the utterance count, and the share of the reference's
non-speech time held open (inside an utterance). Silero's probabilities are computed once per file and
replayed into every endpointer (streamed scoring equals whole-clip scoring: shared/pipeline/silero.py);
the levels the second look reads are the endpointer's own.

Files: `real` (the seven real recordings, RTTM references) and the `words` groups (the transcribed dev
files, clean, -20 dB, pink noise 10 dB SNR, reverberant, and two_rooms; references by energy on the
clean original), both half "dev"; `fixtures`, the project's missed-speech fixtures (tests/fixtures:
two_rooms, tinny_voice, quiet_utterance; exact turns); and `silence-heavy`, make bench's mostly silent
5 minutes (45 s of speech over a -55 dBFS pink floor, 40 clicks and two 6 s tunes from a phone speaker:
local_dev/bench/conversation_audio.py; reference by energy inside each placed utterance), where
non-speech held open shows (the real recordings hold little: 15 s of 220). Columns: the live endpointer
without the second look, with it, and with it on levels not high-passed (as the file pipeline reads
them); the file pipeline's chunk regions without and with its second look.

`--finals`: what the live final model (Stages.live_final, as a session calls it) makes of the utterances
lying wholly in non-speech (at most 0.2 s of reference speech), with and without the second look.

`--sweep` replays FLOOR_S / LOUD_HOLD_S settings (and the unfiltered levels) on the tune and the check
half of the degraded conversation groups (conv-noise, conv-reverb, conv-phone, same-phone); choose on
the tune half.

    python -m local_dev.eval.live_vad [--sweep | --finals] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from local_dev.bench import conversation_audio
from local_dev.eval import corpus, sets
from shared.core.config import Settings
from shared.core.domain import SAMPLE_RATE
from shared.live.endpoint import FLOOR_S, LOUD_HOLD_S, Endpointer
from shared.media.decode import decode
from shared.media.pcm import as_audio
from shared.pipeline.silero import WINDOW, score_clip
from shared.pipeline.vad import SileroVad

FEED = 8000  # samples a feed (0.5 s), as a live client sends them
DEGRADED = ("conv-noise", "conv-reverb", "conv-phone", "same-phone")
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def extra_items() -> list[sets.Item]:
    """The missed-speech fixtures and make bench's silence-heavy file, as eval items."""
    items = []
    for name in ("two_rooms", "tinny_voice", "quiet_utterance"):
        meta = json.loads((FIXTURES / f"{name}.json").read_text())
        turns = [corpus.RefTurn(t["start"], t["end"], t["speaker"]) for t in meta["turns"]]
        items.append(sets.Item(name, "fixtures", "dev", str(FIXTURES / meta["audio"]), corpus.to_rttm(turns, name),
                               meta["num_speakers"], meta["duration"]))
    out = sets.OUT_DIR / "live_vad"
    wav = out / f"{conversation_audio.SILENT_NAME}.wav"
    if not wav.exists():
        conversation_audio.build_silence_heavy_audio(out)
    audio = decode(wav).samples
    # where build_silence_heavy_audio placed its four utterances; speech by energy inside each
    seconds, root, turns = 300.0, conversation_audio.data_dir(), []
    sources = [f"{sets.LIBRI}/sense_and_sensibility_01_austen_64kb-{u}.wav" for u in ("0870", "0890", "0920")]
    for k, source in enumerate([*sources, "jfk/jfk_16k.wav"]):
        start = int(seconds * (0.07 + 0.77 * k / 3) * SAMPLE_RATE) / SAMPLE_RATE
        clip = decode(root / source).samples
        turns += [corpus.RefTurn(start + a, start + b, "s") for a, b in corpus.speech_regions(clip)]
    items.append(sets.Item(wav.stem, "silence-heavy", "dev", str(wav), corpus.to_rttm(turns, wav.stem), 2,
                           len(audio) / SAMPLE_RATE))
    return items


class Replay:
    """Silero's probabilities of the whole file, handed out window by window as SileroState would."""

    def __init__(self, probs: np.ndarray):
        self.probs, self.at = probs, 0

    def score(self, windows: np.ndarray) -> np.ndarray:
        out = self.probs[self.at : self.at + len(windows)]
        self.at += len(windows)
        return out


def utterances(audio: np.ndarray, probs: np.ndarray, settings, **kwargs) -> list[tuple[float, float]]:
    ep = Endpointer(threshold=settings.stream_vad_threshold, neg_threshold=settings.stream_vad_neg_threshold,
                    silence_ms=settings.stream_silence_ms, max_utterance_s=settings.stream_max_utterance_s, **kwargs)
    ep._state = Replay(probs)
    out, start = [], None
    for at in range(0, len(audio), FEED):
        for b in ep.feed(audio[at : at + FEED]):
            if b.kind == "start":
                start = b.sample
            else:
                out.append((start / SAMPLE_RATE, b.sample / SAMPLE_RATE))
    out += [(start / SAMPLE_RATE, b.sample / SAMPLE_RATE) for b in ep.close(len(audio))]
    return out


def union(spans) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Seconds in both unions of spans."""
    total, j = 0.0, 0
    for x0, x1 in a:
        while j < len(b) and b[j][1] <= x0:
            j += 1
        k = j
        while k < len(b) and b[k][0] < x1:
            total += max(0.0, min(x1, b[k][1]) - max(x0, b[k][0]))
            k += 1
    return total


def reference(item) -> list[tuple[float, float]]:
    rows = [line.split() for line in item.rttm.splitlines() if line.startswith("SPEAKER")]
    return union((float(f[3]), float(f[3]) + float(f[4])) for f in rows)


class Tally:
    def __init__(self):
        self.files = 0
        self.speech = self.silence = 0.0
        self.missed: dict[str, float] = defaultdict(float)
        self.held: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, name: str, ref, spans, duration: float) -> None:
        spans = union(spans)
        opened = sum(b - a for a, b in spans)
        inside = overlap(ref, spans)
        self.missed[name] += sum(b - a for a, b in ref) - inside
        self.held[name] += opened - inside
        self.count[name] += len(spans)

    def row(self, name: str) -> tuple[float, int, float]:
        return self.missed[name], self.count[name], self.held[name] / max(self.silence, 1e-9)


def measure(items, settings, vad: SileroVad | None, configs: dict[str, dict], log=print) -> dict[str, Tally]:
    groups: dict[str, Tally] = defaultdict(Tally)
    for item in items:
        audio = decode(item.audio).samples
        probs = score_clip(as_audio(audio))[: len(audio) // WINDOW]
        ref = [(a, min(b, len(audio) / SAMPLE_RATE)) for a, b in reference(item)]
        duration = len(audio) / SAMPLE_RATE
        tally = groups[item.group]
        tally.files += 1
        tally.speech += sum(b - a for a, b in ref)
        tally.silence += duration - sum(b - a for a, b in ref)
        for name, kwargs in configs.items():
            tally.add(name, ref, utterances(audio, probs, settings, **kwargs), duration)
        if vad is not None:
            for name, look in (("file, no second look", False), ("file", True)):
                vad.second_look = look
                tally.add(name, ref, [r for c in vad.split(audio) for r in c.speech], duration)
        log(f"  {item.group} {item.name}: " + ", ".join(
            f"{n} {tally.missed[n]:.1f}" for n in tally.missed), flush=True)
    return groups


def finals(items, settings) -> int:
    """Words the final model hears in utterances that hold (almost) no reference speech."""
    from shared.core.domain import Chunk, TranscribeOptions
    from shared.media.pcm import ArrayAudio, ChunkAudio
    from shared.pipeline.models import StageWorker

    worker = StageWorker(settings).load()
    options = TranscribeOptions(diarize=False)
    for name, kwargs in (("without the second look", {"second_look": False}), ("with it", {})):
        seconds, count, words = 0.0, 0, []
        for item in items:
            audio = decode(item.audio).samples
            probs = score_clip(as_audio(audio))[: len(audio) // WINDOW]
            ref = reference(item)
            for a, b in utterances(audio, probs, settings, **kwargs):
                if overlap([(a, b)], ref) > 0.2:
                    continue
                piece = audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]
                d = round(len(piece) / SAMPLE_RATE, 3)
                chunk = Chunk(index=0, start=0.0, end=d, keep_start=0.0, keep_end=d, speech=[(0.0, d)])
                [t] = worker.live_final([ChunkAudio(chunk, ArrayAudio(piece))], options)
                heard = [w.word.strip() for seg in t.segments for w in seg.words]
                seconds, count = seconds + b - a, count + 1
                words += [f"{item.name}@{a:.1f}: {' '.join(heard)}"] if heard else []
        print(f"{name}: {count} non-speech utterances, {seconds:.1f} s; words from {len(words)}:")
        for line in words:
            print(f"  {line}")
    return 0


def table(groups: dict[str, Tally], names: list[str]) -> str:
    head = ("| group | files | speech s | non-speech s | " + " | ".join(f"missed s {n}" for n in names) + " | "
            + " | ".join(f"utterances {n}" for n in names) + " | "
            + " | ".join(f"non-speech held {n}" for n in names) + " |")
    rows = [head, "|---|" + "---:|" * (3 + 3 * len(names))]
    total = Tally()
    for group, t in groups.items():
        rows.append(f"| {group} | {t.files} | {t.speech:.1f} | {t.silence:.1f} | "
                    + " | ".join(f"{t.row(n)[0]:.1f}" for n in names) + " | "
                    + " | ".join(f"{t.row(n)[1]}" for n in names) + " | "
                    + " | ".join(f"{t.row(n)[2]:.1%}" for n in names) + " |")
        total.files += t.files
        total.speech += t.speech
        total.silence += t.silence
        for n in names:
            total.missed[n] += t.missed[n]
            total.held[n] += t.held[n]
            total.count[n] += t.count[n]
    if len(groups) > 1:
        rows.append(f"| **all** | {total.files} | {total.speech:.1f} | {total.silence:.1f} | "
                    + " | ".join(f"{total.row(n)[0]:.1f}" for n in names) + " | "
                    + " | ".join(f"{total.row(n)[1]}" for n in names) + " | "
                    + " | ".join(f"{total.row(n)[2]:.1%}" for n in names) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="FLOOR_S / LOUD_HOLD_S on the degraded tune half")
    parser.add_argument("--limit", type=int, default=0, help="files per group (0: all)")
    parser.add_argument("--finals", action="store_true", help="final-model words from non-speech utterances")
    parser.add_argument("--floors", default="10,30,60")
    parser.add_argument("--holds", default="2,5,10,1000")
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None, device="cpu")
    items = sets.load_items(log=lambda *a: None)
    started = time.perf_counter()

    def pick(keep):
        seen: dict[str, int] = defaultdict(int)
        out = []
        for item in items:
            if keep(item) and not (args.limit and seen[item.group] >= args.limit):
                seen[item.group] += 1
                out.append(item)
        return out

    if args.finals:
        return finals(pick(lambda i: i.group == "real" or i.kind == "words") + extra_items(), settings)
    if args.sweep:
        configs = {"off": {"second_look": False}}
        for f in args.floors.split(","):
            for h in args.holds.split(","):
                configs[f"{f}/{h}"] = {"floor_s": float(f), "hold_s": float(h)}
        configs["raw levels"] = {"highpass": False}  # FLOOR_S, LOUD_HOLD_S; levels not high-passed
        for half in ("tune", "check"):
            groups = measure(pick(lambda i: i.group in DEGRADED and i.half == half), settings, None, configs,
                             log=lambda *a, **k: None)
            print(f"\n### {half} half (floor s / hold s)\n")
            print(table(groups, list(configs)))
    else:
        names = ["live, no second look", "live", "live, raw levels", "file, no second look", "file"]
        configs = {names[0]: {"second_look": False}, names[1]: {}, names[2]: {"highpass": False}}
        vad = SileroVad.from_settings(settings)
        chosen = pick(lambda i: i.group == "real" or i.kind == "words") + extra_items()
        groups = measure(chosen, settings, vad, configs)
        print(f"\nSTREAM_VAD_THRESHOLD {settings.stream_vad_threshold:g} / {settings.stream_vad_neg_threshold:g}, "
              f"STREAM_SILENCE_MS {settings.stream_silence_ms}; FLOOR_S {FLOOR_S:g}, LOUD_HOLD_S {LOUD_HOLD_S:g}\n")
        print(table(groups, names))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
