"""`make bench`: our pipeline against faster-whisper used directly, in one run, on the same machine.

On a >= 5 minute two-speaker conversation with exact references (local_dev/bench/conversation_audio.py),
with the same model, compute type and threads:
  (a) plain WhisperModel.transcribe, beam 5
  (b) BatchedInferencePipeline, batch 8
  (c) our full pipeline: VAD chunks, batched transcription, diarization and word timestamps
Each runs in its own process (a warm-up on 20 s first, model load excluded), so peak RSS is its own.
Targets: c/a <= 0.5, c/b <= 1.1, WER(c) <= WER(a) + 1 point. Ratios, not absolute times, are what
compare across these noisy machines.

Then, on 5 minutes of mostly silence (local_dev/bench/conversation_audio.py build_silence_heavy_audio:
45 s of speech over a noise floor with clicks and tunes), what looking past the VAD costs: (b), and (c)
with and without the VAD's second look (c0: only what Silero calls speech reaches Whisper), and the words
each gets (no words may come from the clicks and tunes). `--skip-silence` leaves this out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from local_dev.bench.conversation_audio import build_bench_audio, build_silence_heavy_audio
from local_dev.eval.scoring import der, wer, word_errors
from shared.media.decode import decode

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "a": "faster-whisper transcribe, beam 5",
    "b": "faster-whisper BatchedInferencePipeline, batch 8",
    "c": "whospoke pipeline (+diarization, +words)",
}
SILENCE_CONFIGS = {
    "b": CONFIGS["b"],
    "c": CONFIGS["c"],
    "c0": "whospoke pipeline, no second look past the VAD",
}


def run_config(name: str, wav: Path, threads: int) -> dict:
    """Run inside a child process: load, warm up, time one pass over `wav`. Each child imports only its
    configuration's models and pipeline (here, not at the top), so its peak RSS is that configuration's."""
    samples = decode(wav).samples
    duration = len(samples) / 16_000
    warm = samples[: 20 * 16_000]
    if name in ("a", "b"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from shared.pipeline.transcriber import resolve_whisper_model

        model = WhisperModel(resolve_whisper_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=threads)
        if name == "a":
            def go(x):
                segments, _ = model.transcribe(x, beam_size=5, language="en")
                return " ".join(s.text for s in segments), None
        else:
            pipeline = BatchedInferencePipeline(model)

            def go(x):
                segments, _ = pipeline.transcribe(x, batch_size=8, beam_size=5, language="en")
                return " ".join(s.text for s in segments), None
    else:
        from shared.core.config import Settings
        from shared.core.domain import TranscribeOptions
        from shared.pipeline.flow import transcribe
        from shared.service.formats import render
        from shared.pipeline.runner import InProcessRunner
        from shared.pipeline.models import StageWorker

        # the same cores in all: TRANSCRIBE_WORKERS decodes share `threads` between them
        workers = Settings(_env_file=None, device="cpu").resolved_transcribe_workers
        settings = Settings(_env_file=None, whisper_model="tiny.en", device="cpu", compute_type="int8",
                            cpu_threads=max(1, threads // workers), transcribe_workers=workers,
                            batch_size=8, beam_size=5)
        worker = StageWorker(settings).load()
        worker.vad.second_look = name != "c0"
        runner = InProcessRunner(worker)
        options = TranscribeOptions(diarize=True, word_timestamps=True, language="en")

        def go(x):
            t = transcribe(x, options, runner, batch_size=settings.batch_size)
            return " ".join(s.text for s in t.segments), render(t, "rttm")

    go(warm)
    start, cpu_start = time.perf_counter(), time.process_time()
    text, rttm = go(samples)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"config": name, "seconds": elapsed, "cpu_seconds": cpu, "rtf": elapsed / duration, "duration": duration,
            "text": text, "rttm": rttm, "peak_rss_mb": peak_mb}


def measure(name: str, wav: Path, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "local_dev.bench", "--child", name, "--wav", str(wav), "--threads", str(threads)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"config {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_dev.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=list({**CONFIGS, **SILENCE_CONFIGS}), help=argparse.SUPPRESS)
    parser.add_argument("--wav", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--skip-concurrency", action="store_true", help="no concurrency section")
    parser.add_argument("--skip-silence", action="store_true", help="no silence-heavy section")
    parser.add_argument("--long", nargs="?", const="15m,1h,4h", metavar="SIZES",
                        help="then the long-form section (local_dev/bench/long_form.py), default sizes 15m,1h,4h")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_config(args.child, args.wav, args.threads)))
        return 0

    wav, ref_text, ref_rttm_path = build_bench_audio()
    ref_rttm = Path(ref_rttm_path).read_text()
    print(f"audio: {wav.name}, threads: {args.threads}, model: tiny.en int8 (CPU)", flush=True)
    results = {}
    for name in CONFIGS:
        results[name] = r = measure(name, wav, args.threads)
        r["wer"] = wer(ref_text, r["text"])
        r["der"] = der(ref_rttm, r["rttm"]) if r["rttm"] else None
        print(f"  ran ({name}) in {r['seconds']:.1f} s", flush=True)
    duration = results["a"]["duration"]
    print(f"\n{duration:.1f} s of audio\n")
    print("| config | time (s) | CPU (s) | RTF | WER | DER | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, label in CONFIGS.items():
        r = results[name]
        der_text = f"{r['der']:.3f}" if r["der"] is not None else "-"
        print(f"| ({name}) {label} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['rtf']:.4f} | {r['wer']:.3f} | {der_text} "
              f"| {r['peak_rss_mb']:.0f} |")
    a, b, c = (results[k] for k in "abc")
    checks = [
        ("c/a time", c["seconds"] / a["seconds"], "<= 0.5", c["seconds"] / a["seconds"] <= 0.5),
        ("c/b time", c["seconds"] / b["seconds"], "<= 1.1", c["seconds"] / b["seconds"] <= 1.1),
        ("WER(c) - WER(a)", c["wer"] - a["wer"], "<= 0.01", c["wer"] - a["wer"] <= 0.01),
    ]
    print(f"(CPU-time ratios, steadier on a shared machine: c/a {c['cpu_seconds'] / a['cpu_seconds']:.3f}, "
          f"c/b {c['cpu_seconds'] / b['cpu_seconds']:.3f})")
    print()
    for label, value, target, ok in checks:
        print(f"{label}: {value:.3f} (target {target}) {'met' if ok else 'NOT met'}")
    if not args.skip_silence:
        silence_section(args.threads)
    # The sections' modules load here, in the parent only: the --child processes run this module too.
    if not args.skip_concurrency:
        try:
            from local_dev.bench.concurrency import main as concurrency_main
        except ImportError:
            pass
        else:
            print()
            concurrency_main([])
    if args.long:
        from local_dev.bench.long_form import main as long_main

        print()
        return long_main(["--sizes", args.long])
    return 0


def silence_section(threads: int) -> None:
    wav, ref_text = build_silence_heavy_audio()
    print(f"\nmostly silence: {wav.name}\n")
    print("| config | time (s) | CPU (s) | RTF | words | deleted | inserted |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = {}
    for name, label in SILENCE_CONFIGS.items():
        results[name] = r = measure(name, wav, threads)
        e = word_errors(ref_text, r["text"])
        print(f"| ({name}) {label} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['rtf']:.4f} | {e['ref_words']} "
              f"| {e['deletions']} | {e['insertions']} |", flush=True)
    b, c, c0 = (results[k] for k in ("b", "c", "c0"))
    print(f"second look's cost: c/c0 {c['seconds'] / c0['seconds']:.2f} time, {c['cpu_seconds'] / c0['cpu_seconds']:.2f} CPU; "
          f"c/b {c['seconds'] / b['seconds']:.2f} time, {c['cpu_seconds'] / b['cpu_seconds']:.2f} CPU")


if __name__ == "__main__":
    raise SystemExit(main())
