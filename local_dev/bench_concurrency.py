"""`make bench`, concurrency section: N concurrent requests on 1 vs 2 workers, and cross-request batching.

    python -m local_dev.bench_concurrency [--requests 4] [--short-requests 8] [--repeat 2] [--out bench-out]

1. Throughput: N whole requests (decode done, VAD + language + transcription + diarization) at once,
   through the in-process runner, a pool of 1 worker and a pool of 2 workers (CPU workers here: the
   cores are shared out, so 2 workers get 1 thread each). Prints audio seconds per wall second and
   the 2-vs-1 ratio.
2. Cross-request batching: many short requests (one chunk each, diarize off) at once, with merging
   (BATCH_WAIT_MS=50, up to BATCH_SIZE chunks per call) and without (merge cap 1 chunk).

Audio: the committed test fixtures (tests/fixtures/*.flac, ~28 s and ~22 s of real speech) for (1),
and their single utterances (from the reference turns) for (2), so the bench needs no dev data.
Best wall time of --repeat runs; each configuration is warmed up first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shared.config import Settings
from shared.domain import SAMPLE_RATE, TranscribeOptions
from shared.pipeline import transcribe

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


def load_clips() -> tuple[list[np.ndarray], list[np.ndarray]]:
    from shared.audio import decode

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


def measure(make_runner, clips, n, options, batch_size, repeat) -> dict:
    with make_runner() as runner:
        run_batch(runner, clips, 2, options, batch_size)  # warm up (both workers of a pair)
        merged_before = getattr(runner, "merged_calls", 0)
        best = None
        for _ in range(repeat):
            wall, audio, latencies = run_batch(runner, clips, n, options, batch_size)
            if best is None or wall < best[0]:
                best = (wall, audio, latencies)
        merged = getattr(runner, "merged_calls", 0) - merged_before
    wall, audio, latencies = best
    return {"wall_s": round(wall, 2), "audio_s": round(audio, 1), "throughput_x": round(audio / wall, 2),
            "mean_latency_s": round(statistics.mean(latencies), 2), "merged_calls": merged / repeat}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4, help="concurrent whole requests in part 1")
    parser.add_argument("--short-requests", type=int, default=8, help="concurrent one-chunk requests in part 2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--only", choices=["throughput", "batching"], help="run one part")
    args = parser.parse_args(argv)

    from local_dev.pool import LocalPool

    base = Settings(device="cpu")
    whole, turns = load_clips()
    results: dict = {"requests": args.requests, "short_requests": args.short_requests}

    def pool(workers: int, **update):
        return lambda: LocalPool(base.model_copy(update={"cpu_workers": workers, **update})).start(timeout=600)

    if args.only != "batching":
        part_throughput(args, base, whole, pool, results)
    if args.only != "throughput":
        part_batching(args, base, turns, pool, results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.json").write_text(json.dumps(results, indent=2))
    print(f"\n(written to {args.out / 'concurrency.json'})")
    return 0


def part_throughput(args, base, whole, pool, results) -> None:
    from shared.runner import InProcessRunner
    from shared.stages import StageWorker

    full = TranscribeOptions(diarize=True)
    print(f"## Concurrency: {args.requests} concurrent requests (~25 s of speech each, diarized), CPU")
    print("| runner | wall s | audio s / wall s | mean latency s |")
    print("|---|---|---|---|")
    part1 = {}
    for name, make in (("in-process", lambda: InProcessRunner(StageWorker(base).load())),
                       ("pool, 1 worker", pool(1)), ("pool, 2 workers", pool(2))):
        part1[name] = r = measure(make, whole, args.requests, full, base.batch_size, args.repeat)
        print(f"| {name} | {r['wall_s']} | {r['throughput_x']} | {r['mean_latency_s']} |", flush=True)
    ratio = part1["pool, 2 workers"]["throughput_x"] / part1["pool, 1 worker"]["throughput_x"]
    print(f"\nthroughput 2 workers / 1 worker: {ratio:.2f}x\n")
    results["throughput"] = part1
    results["ratio_2_vs_1"] = round(ratio, 2)


def part_batching(args, base, turns, pool, results) -> None:
    short = TranscribeOptions(diarize=False, language="en")
    print(f"## Cross-request batching: {args.short_requests} concurrent one-chunk requests (diarize off)")
    print("| workers | merging | wall s | audio s / wall s | mean latency s | merged calls |")
    print("|---|---|---|---|---|---|")
    part2 = {}
    for workers in (1, 2):
        for merging, update in (("off", {"batch_size": 1}), ("on", {"batch_wait_ms": 50.0})):
            key = f"{workers} worker(s), merging {merging}"
            part2[key] = r = measure(pool(workers, **update), turns, args.short_requests, short,
                                     base.batch_size, args.repeat)
            print(f"| {workers} | {merging} | {r['wall_s']} | {r['throughput_x']} | {r['mean_latency_s']} | "
                  f"{r['merged_calls']:.0f} |", flush=True)
    results["batching"] = part2


if __name__ == "__main__":
    raise SystemExit(main())
