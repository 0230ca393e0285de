"""`make bench`, concurrency section: N concurrent requests on 1 vs 2 workers, and cross-request batching.

    python -m local_dev.bench.concurrency [--requests 4] [--short-requests 8] [--rounds 5] [--out bench-out]

1. Throughput: N whole requests (decode done, VAD + language + transcription + diarization) at once,
   through the in-process runner, a pool of 1 worker and a pool of 2 workers (CPU workers here: the
   cores are shared out, so 2 workers get 1 thread each). Prints audio seconds per wall second and
   the 2-vs-1 ratio.
2. Cross-request batching: many short requests (one chunk each, diarize off) at once, with merging
   (BATCH_MERGE=on, BATCH_WAIT_MS=50, up to BATCH_SIZE chunks per call) and without (BATCH_MERGE=off).

Audio: the committed test fixtures (tests/fixtures/*.flac, ~28 s and ~22 s of real speech) for (1),
and their single utterances (from the reference turns) for (2), so the bench needs no dev data.
All configurations of a part run side by side, warmed up, then in turn for --rounds rounds (a busy
neighbour slows them alike); the table gives the best and the median wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from local_dev.pool import LocalPool
from local_dev.settings import PoolSettings
from shared.core.config import Settings
from shared.core.domain import SAMPLE_RATE, TranscribeOptions
from shared.media.decode import decode
from shared.pipeline.flow import transcribe
from shared.pipeline.models import StageWorker
from shared.pipeline.runner import InProcessRunner

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def load_clips() -> tuple[list[np.ndarray], list[np.ndarray]]:
    whole, turns = [], []
    for name in ("two_speakers", "one_speaker"):
        samples = decode(FIXTURES / f"{name}.flac").samples
        whole.append(samples)
        for turn in json.loads((FIXTURES / f"{name}.json").read_text())["turns"]:
            a, b = int(max(0.0, turn["start"] - 0.3) * SAMPLE_RATE), int((turn["end"] + 0.3) * SAMPLE_RATE)
            turns.append(samples[a:b])
    return whole, turns


def run_batch(runner, clips: list[np.ndarray], n: int, options: TranscribeOptions, batch_size: int):
    """n requests at once; returns wall seconds, audio seconds, per-request latencies."""
    requests = [clips[i % len(clips)] for i in range(n)]
    latencies: list[float] = []

    def one(samples: np.ndarray) -> None:
        started = time.perf_counter()
        transcribe(samples, options, runner, batch_size=batch_size)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(one, requests))
    wall = time.perf_counter() - started
    return wall, sum(len(s) for s in requests) / SAMPLE_RATE, latencies


def compare(configs, clips, n: int, options: TranscribeOptions, batch_size: int, rounds: int) -> dict:
    """Start every configuration, warm each up, then run them in turn, round after round, so a noisy
    neighbour on the machine slows all of them alike. Best and median wall time per configuration."""
    runners = {}
    try:
        for name, make in configs:
            runners[name] = make()
        for runner in runners.values():
            run_batch(runner, clips, 2, options, batch_size)  # warm up (both workers of a pair)
        merged_before = {name: getattr(r, "merged_calls", 0) for name, r in runners.items()}
        runs: dict[str, list] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, runner in runners.items():
                runs[name].append(run_batch(runner, clips, n, options, batch_size))
        merged = {name: (getattr(r, "merged_calls", 0) - merged_before[name]) / rounds for name, r in runners.items()}
    finally:
        for runner in runners.values():
            runner.close()
    out = {}
    for name, results in runs.items():
        walls = sorted(r[0] for r in results)
        audio = results[0][1]
        out[name] = {
            "best_wall_s": round(walls[0], 2),
            "median_wall_s": round(statistics.median(walls), 2),
            "audio_s": round(audio, 1),
            "throughput_x": round(audio / statistics.median(walls), 2),
            "median_latency_s": round(statistics.median(x for r in results for x in r[2]), 2),
            "merged_calls_per_round": round(merged[name], 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4, help="concurrent whole requests in part 1")
    parser.add_argument("--short-requests", type=int, default=8, help="concurrent one-chunk requests in part 2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--only", choices=["throughput", "batching"], help="run one part")
    args = parser.parse_args(argv)

    base = Settings(device="cpu")
    whole, turns = load_clips()
    results: dict = {"requests": args.requests, "short_requests": args.short_requests, "rounds": args.rounds}

    def pool(workers: int, **update):
        return lambda: LocalPool(base, pool=PoolSettings(cpu_workers=workers, **update)).start(timeout=600)

    if args.only != "batching":
        part_throughput(args, base, whole, pool, results)
    if args.only != "throughput":
        part_batching(args, base, turns, pool, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.json").write_text(json.dumps(results, indent=2))
    print(f"\n(written to {args.out / 'concurrency.json'})")
    return 0


HEADER = "| best wall s | median wall s | audio s / wall s (median) | median latency s | merged calls / round |"


def row(r: dict) -> str:
    return (f"| {r['best_wall_s']} | {r['median_wall_s']} | {r['throughput_x']} | {r['median_latency_s']} | "
            f"{r['merged_calls_per_round']} |")


def part_throughput(args, base, whole, pool, results) -> None:
    print(f"## Concurrency: {args.requests} concurrent requests (~25 s of speech each, diarized), CPU, "
          f"{args.rounds} interleaved rounds")
    print("| runner " + HEADER)
    print("|---" * 6 + "|")
    configs = [("in-process", lambda: InProcessRunner(StageWorker(base).load())),
               ("pool, 1 worker", pool(1)), ("pool, 2 workers", pool(2))]
    part1 = compare(configs, whole, args.requests, TranscribeOptions(diarize=True), base.batch_size, args.rounds)
    for name, r in part1.items():
        print(f"| {name} " + row(r))
    ratio = part1["pool, 2 workers"]["throughput_x"] / part1["pool, 1 worker"]["throughput_x"]
    print(f"\nthroughput 2 workers / 1 worker: {ratio:.2f}x\n", flush=True)
    results["throughput"] = part1
    results["ratio_2_vs_1"] = round(ratio, 2)


def part_batching(args, base, turns, pool, results) -> None:
    print(f"## Cross-request batching: {args.short_requests} concurrent one-chunk requests (diarize off), "
          f"{args.rounds} interleaved rounds")
    print("| workers | merging " + HEADER)
    print("|---" * 7 + "|")
    configs = [(f"{w} | {m}", pool(w, **update)) for w in (1, 2)
               for m, update in (("off", {"batch_merge": "off"}), ("on", {"batch_merge": "on", "batch_wait_ms": 50.0}))]
    part2 = compare(configs, turns, args.short_requests, TranscribeOptions(diarize=False, language="en"),
                    base.batch_size, args.rounds)
    for name, r in part2.items():
        print(f"| {name} " + row(r))
    results["batching"] = part2


if __name__ == "__main__":
    raise SystemExit(main())
