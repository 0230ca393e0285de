"""`make bench-stream` (and the streaming section of `make bench`): live transcription through a running
server (`python -m local_dev serve`, as `make run` starts it), over both protocols.

Audio (`--set quick`, the default): the seven real recordings, then conversations of the evaluation set's
check half whose speakers hand over in under 0.6 s (real LibriSpeech voices on their own recordings or
through one room; exact reference turns; local_dev/eval/sets.py, live_turns.py); `--set conv`: the check
half's clean conversations. At least `--minutes` of them, each streamed as its own session, paced at real
time and at 4x. Per protocol and speed:
- first-word latency p50/p95: a word's end in the audio to its first appearance in a partial, tentative
  or stable (wall clock, the audio's own pace subtracted),
- stable-word latency p50/p95: the same to its first appearance as a stable partial word (never taken
  back); both match the partials' words to the final's words of the utterance (in order, and within
  MATCH_S of the final word's time), each final word timed by its end,
- final latency p50/p95: an utterance's end to its final (and, after the table, the p50 of finals cut at
  a speaker change, timed from the cut, apart from the others),
- partial interval mean/p95: the wall time between successive partial events of the same open utterance,
  as the stream got them (a partial is sent when its words change: a decode that changes nothing sends
  none); with more streams than the cores serve, partials give way to finals (shared/live/models.py),
  so this stretches before final latency grows,
- words retracted (append-only deltas: must be 0) and the share of partial words the final changed,
- final WER against the offline pipeline on the same audio (its /api/transcribe answer as reference),
  and the live DER (finals as speaker turns) beside the offline DER,
then, with N real-time streams of one conversation at once (native protocol), final latency and the
partial interval per level, and the number of streams before final latency p50 doubles.
Targets: partial (stable) p50 <= 1.0 s, final p50 <= 2.5 s, WER within 2 points, >= 4 concurrent streams.
The Realtime protocol sends stable words only (its deltas are append-only): its first-word and stable-word
latencies are the same numbers. A short smoke run: `--minutes 0.1 --speeds 1 --protocols native --levels ''
--no-words` (one conversation).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from local_dev.bench.server_process import Server, request, upload
from local_dev.eval.scoring import der, normalize_words, wer
from local_dev.bench.partial_timing import intervals
from local_dev.eval.sets import load_items
from shared.live.client import StreamClient
from shared.media.decode import decode

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench-out" / "stream"
MATCH_S = 1.0  # a partial word counts as a final word only this close to it in time (a chance match is not)


@dataclass
class Clip:
    name: str
    path: Path
    pcm: bytes
    duration: float
    rttm: str
    offline_text: str = ""
    offline_der: float | None = None
    native_words: list[tuple[str, float]] = field(default_factory=list)  # final words and their ends


@dataclass
class Measured:
    first_word_latency: list[float] = field(default_factory=list)  # tentative or stable
    stable_latency: list[float] = field(default_factory=list)
    final_latency: list[float] = field(default_factory=list)
    cut_final_latency: list[float] = field(default_factory=list)  # those of finals ended by a speaker change ...
    other_final_latency: list[float] = field(default_factory=list)  # ... and of the rest (silence, a commit)
    partial_intervals: list[float] = field(default_factory=list)  # between partials of one utterance
    partial_words: int = 0
    changed_words: int = 0
    retracted: int = 0
    wers: list[float] = field(default_factory=list)
    ders: list[float] = field(default_factory=list)
    audio_s: float = 0.0


def load_clips(minutes: float, half: str = "check", which: str = "quick") -> list[Clip]:
    """`quick`: the real recordings, then the `half`'s conversations whose speakers hand over in under
    0.6 s (local_dev/eval/live_turns.py), one room or many; `conv`: the half's clean conversations."""
    if which == "quick":
        from local_dev.eval.live_turns import chosen_items

        chosen = [i for i in chosen_items() if i.half in (half, "dev")]
        items = sorted(chosen, key=lambda i: (i.half != "dev", i.name))
    else:
        items = sorted((i for i in load_items(log=lambda *_: None) if i.group == "conv-clean" and i.half == half),
                       key=lambda i: i.name)
    clips, total = [], 0.0
    for item in items:
        samples = decode(Path(item.audio)).samples
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        clips.append(Clip(item.name, Path(item.audio), pcm, len(samples) / 16000, item.rttm))
        total += clips[-1].duration
        if total >= minutes * 60:
            break
    return clips


def load_word_clips() -> list[tuple[Clip, str, str]]:
    """The evaluation set's files with reference words (words-clean, -noisy, -quiet, -reverb, -mixed)."""
    out = []
    for item in load_items(log=lambda *_: None):
        if item.kind == "words" and item.text:
            samples = decode(Path(item.audio)).samples
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
            out.append((Clip(item.name, Path(item.audio), pcm, len(samples) / 16000, item.rttm), item.text, item.group))
    return out


def word_accuracy(server: Server, url: str) -> str:
    """WER against reference words, live finals beside the offline pipeline, on the same files."""
    rows: dict[str, list] = {}
    for clip, reference, group_name in load_word_clips():
        offline(server, clip)
        run = asyncio.run(StreamClient(url, speed=0).run(clip.pcm, timeout=600))
        group = rows.setdefault(group_name, [0.0, [], [], []])
        group[0] += clip.duration
        group[1].append(reference)
        group[2].append(clip.offline_text)
        group[3].append(run.transcript())
    lines = ["| files | audio (s) | WER offline | WER live finals | live - offline |", "|---|---:|---:|---:|---:|"]
    for name, (seconds, refs, offs, lives) in sorted(rows.items()):
        w_off, w_live = wer(" ".join(refs), " ".join(offs)), wer(" ".join(refs), " ".join(lives))
        lines.append(f"| {name} | {seconds:.0f} | {w_off:.3f} | {w_live:.3f} | {100 * (w_live - w_off):+.1f} points |")
    return "\n".join(lines)


def offline(server: Server, clip: Clip) -> None:
    """The offline pipeline's transcript and DER of the same audio, from the same server."""
    status, body = upload(server.url("/api/audio"), clip.path, timeout=600)
    if status == 201 and body is not None:
        status, body = request("POST", server.url(f"/api/transcribe?clip_id={body['clip_id']}&format=json"), 600)
    if status != 200 or body is None:
        raise RuntimeError(f"offline transcription of {clip.name} failed: {status} {body}")
    clip.offline_text = " ".join(s["text"] for s in body["segments"])
    clip.offline_der = der(clip.rttm, _rttm((s["start"], s["end"], s["speaker"]) for s in body["segments"]))


def _rttm(turns) -> str:
    return "".join(f"SPEAKER file 1 {a:.3f} {b - a:.3f} <NA> <NA> {s} <NA> <NA>\n" for a, b, s in turns if s)


def _words(words: list[dict]) -> list[tuple[str, float]]:
    """Normalised words with the end time of the word each came from."""
    return [(n, w["end"]) for w in words for n in normalize_words(w["word"])]


def first_shown(partials: list[tuple[float, dict]], final_words: list[tuple[str, float]]) -> tuple[dict, dict]:
    """One utterance's partials against its final's words: per final word (index), when it was first shown
    at all (tentative or stable) and first shown as a stable word. Each partial shows the stable words so
    far and its tentative tail; they are aligned in order with the final's words, and a match counts only
    within MATCH_S of the final word's time."""
    stable: list[tuple[str, float]] = []
    seen: dict[int, float] = {}
    settled: dict[int, float] = {}
    reference = [n for n, _ in final_words]
    for arrived, event in partials:
        stable += _words(event["words"])
        shown = stable + _words(event.get("tentative_words", []))
        matcher = difflib.SequenceMatcher(a=[n for n, _ in shown], b=reference, autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                i, j = block.a + k, block.b + k
                if abs(shown[i][1] - final_words[j][1]) > MATCH_S:
                    continue
                seen.setdefault(j, arrived)
                if i < len(stable):
                    settled.setdefault(j, arrived)
    return seen, settled


def score(clip: Clip, finals: list[dict], partials: list[tuple[float, dict]], final_at: dict[int, float],
          speed: float, into: Measured) -> None:
    """Latencies in wall seconds: arrival minus when the audio moment was sent (its time / speed)."""
    by_item = {f["utterance"]: f for f in finals}
    into.partial_intervals += intervals([(arrived, event["utterance"]) for arrived, event in partials])
    reached: dict[int, float] = {}  # per utterance: the end of the last partial word shown
    for arrived, event in partials:
        for w in event["words"]:
            if w["start"] < reached.get(event["utterance"], 0.0) - 0.11:
                into.retracted += 1  # a word over one already shown: the text before it was rewritten
            reached[event["utterance"]] = max(reached.get(event["utterance"], 0.0), w["end"])
        final_words = normalize_words(by_item.get(event["utterance"], {}).get("text", ""))
        said = normalize_words(event["text"])
        into.partial_words += len(said)
        into.changed_words += sum(w not in final_words for w in said)
    starts = {f["start"] for f in finals}
    for item, f in by_item.items():
        into.final_latency.append(final_at[item] - f["end"] / speed)
        if f["end"] in starts:  # the next utterance opens where this one ends: a cut at a speaker change
            into.cut_final_latency.append(into.final_latency[-1])
        else:
            into.other_final_latency.append(into.final_latency[-1])
        words = _words(f["words"])
        seen, settled = first_shown([(a, e) for a, e in partials if e["utterance"] == item], words)
        into.first_word_latency += [at - words[j][1] / speed for j, at in seen.items()]
        into.stable_latency += [at - words[j][1] / speed for j, at in settled.items()]
    live_text = " ".join(f["text"] for f in sorted(finals, key=lambda f: f["utterance"]))
    into.wers.append(wer(clip.offline_text, live_text))
    into.ders.append(der(clip.rttm, _rttm((f["start"], f["end"], f["speaker"]) for f in finals)))
    into.audio_s += clip.duration


def run_native(url: str, clip: Clip, speed: float, into: Measured) -> None:
    run = asyncio.run(StreamClient(url, speed=speed).run(clip.pcm, timeout=clip.duration / speed + 600))
    partials = [(r.at, r.event) for r in run.events if r.event["type"] == "partial"]
    finals = run.finals
    final_at = {r.event["utterance"]: r.at for r in run.events if r.event["type"] == "final"}
    score(clip, finals, partials, final_at, speed, into)
    if not clip.native_words:
        clip.native_words = [(n, w["end"]) for f in finals for w in f["words"] for n in normalize_words(w["word"])]


def concurrency(url: str, clip: Clip, levels: list[int]) -> list[tuple[int, float, float, float, float]]:
    """Final latency p50/p95 and the partial interval mean/p95 with N real-time streams of the same clip
    at once."""
    rows = []
    for n in levels:
        async def many(n: int = n):
            clients = [StreamClient(url, speed=1.0) for _ in range(n)]
            return await asyncio.gather(*(c.run(clip.pcm, timeout=clip.duration + 600) for c in clients))

        latencies, gaps = [], []
        for run in asyncio.run(many()):
            at = {r.event["utterance"]: r.at for r in run.events if r.event["type"] == "final"}
            latencies += [at[f["utterance"]] - f["end"] for f in run.finals]
            gaps += intervals([(r.at, r.event["utterance"]) for r in run.events if r.event["type"] == "partial"])
        rows.append((n, _pct(latencies, 50), _pct(latencies, 95), _mean(gaps), _pct(gaps, 95)))
        print(f"  {n} concurrent: final p50 {rows[-1][1]:.2f} s, p95 {rows[-1][2]:.2f} s; "
              f"partial interval mean {rows[-1][3]:.2f} s, p95 {rows[-1][4]:.2f} s", flush=True)
    return rows


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def table(results: dict[tuple[str, float], Measured]) -> str:
    lines = ["| protocol | pace | audio (s) | first word p50 / p95 (s) | stable word p50 / p95 (s) "
             "| final p50 / p95 (s) | partial interval mean / p95 (s) | retracted "
             "| partial words changed by the final | WER vs offline | DER live / offline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (protocol, speed), m in results.items():
        lines.append(
            f"| {protocol} | {speed:g}x | {m.audio_s:.0f} | {_pct(m.first_word_latency, 50):.2f} / "
            f"{_pct(m.first_word_latency, 95):.2f} | {_pct(m.stable_latency, 50):.2f} / "
            f"{_pct(m.stable_latency, 95):.2f} | {_pct(m.final_latency, 50):.2f} / {_pct(m.final_latency, 95):.2f} | "
            f"{_mean(m.partial_intervals):.2f} / {_pct(m.partial_intervals, 95):.2f} | {m.retracted} | "
            f"{m.changed_words / max(m.partial_words, 1):.0%} of {m.partial_words} | "
            f"{statistics.mean(m.wers):.3f} | {statistics.mean(m.ders):.3f} / {{offline_der}} |")
    for (protocol, speed), m in results.items():
        if m.cut_final_latency:
            lines.append(f"\n{protocol} {speed:g}x: {len(m.cut_final_latency)} of {len(m.final_latency)} finals ended "
                         f"at a speaker change, final p50 {_pct(m.cut_final_latency, 50):.2f} s; the others "
                         f"{_pct(m.other_final_latency, 50):.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="audio per protocol and pace")
    parser.add_argument("--speeds", default="1,4")
    parser.add_argument("--protocols", default="native,realtime")
    parser.add_argument("--levels", default="1,2,4,6", help="concurrent streams to try ('' skips)")
    parser.add_argument("--words", action=argparse.BooleanOptionalAction, default=True,
                        help="WER against reference words on the words-* files, live beside offline")
    parser.add_argument("--half", default="check", choices=["tune", "check"], help="tune: for choosing settings")
    parser.add_argument("--set", dest="which", default="quick", choices=["quick", "conv"],
                        help="quick: the real recordings and quick hand-over conversations; conv: clean conversations")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    clips = load_clips(args.minutes, args.half, args.which)
    print(f"{len(clips)} conversations, {sum(c.duration for c in clips):.0f} s of audio ({args.which}, "
          f"{args.half} half)", flush=True)
    server = Server(OUT / "server.log")
    server.start()
    try:
        for clip in clips:
            offline(server, clip)
        ws = server.url("/ws/stream").replace("http://", "ws://")
        results: dict[tuple[str, float], Measured] = {}
        for protocol in args.protocols.split(","):
            for speed in [float(s) for s in args.speeds.split(",")]:
                m = results[(protocol, speed)] = Measured()
                t0 = time.monotonic()
                for clip in clips:
                    if protocol == "native":
                        run_native(ws, clip, speed, m)
                    else:
                        # the openai SDK (a dev extra, 0.6 s to import) loads only for this protocol
                        from local_dev.bench.streaming_openai import run_realtime

                        run_realtime(server.url("/v1"), clip, speed, m, clip.native_words)
                print(f"  {protocol} at {speed:g}x: {time.monotonic() - t0:.0f} s", flush=True)
        words_table = word_accuracy(server, ws) if args.words else ""
        levels = [int(n) for n in args.levels.split(",") if n]
        rows = concurrency(ws, max(clips, key=lambda c: c.duration), levels) if levels else []
    finally:
        server.stop()
    offline_der = statistics.mean(c.offline_der for c in clips)
    report = table(results).replace("{offline_der}", f"{offline_der:.3f}")
    if words_table:
        report += "\n\n" + words_table
    if rows:
        base = rows[0][1]
        sustained = max((n for n, p50, *_ in rows if p50 <= 2 * base), default=0)
        report += ("\n\n| concurrent real-time streams | final p50 (s) | final p95 (s) | partial interval mean (s) "
                   "| partial interval p95 (s) |\n|---:|---:|---:|---:|---:|\n"
                   + "\n".join(f"| {n} | {p50:.2f} | {p95:.2f} | {gap:.2f} | {gap95:.2f} |"
                                for n, p50, p95, gap, gap95 in rows)
                   + f"\n\nsustained before final p50 doubles: {sustained} streams")
    print("\n" + report)
    (OUT / "report.md").write_text(report + "\n")
    (OUT / "results.json").write_text(json.dumps({f"{p} {s}x": vars(m) for (p, s), m in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
