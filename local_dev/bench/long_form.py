"""Long-form section of `make bench`: 15 min, 1 h and 4 h recordings through the job API of a real server.

    python -m local_dev.bench.long_form [--sizes 15m,1h,4h] [--seed 1234]   (or: make bench-long SIZES=15m)

1. Assembles each recording (local_dev/bench/long_form_audio.py: real LibriSpeech voices in conversations
   of 2-6 speakers, the LibriVox/JFK clips sprinkled in, mp3 64 kbps), cached in bench-out/long/.
2. Reference: each distinct clip transcribed once, alone, by plain faster-whisper (cached in refs.json).
3. Starts the server as `make run` does (`.venv/bin/python -m local_dev serve`, its own process group,
   PORT=<free>, AUDIO_STORAGE_PATH=<temp dir>, HF_HUB_OFFLINE=1) and, once /healthz answers (the
   workers are loaded by then), takes the idle RSS of the whole process group, then runs one unmeasured
   30 s job so that first-call costs do not land on the first size (--no-warmup skips it).
4. Per size: uploads the mp3 to POST /api/transcriptions (diarize, word timestamps), polls the job,
   and samples the group's RSS every 0.5 s: wall time (upload start to job end), RTF, peak RSS, peak
   over idle, words returned vs reference words, WER, speakers found vs placed, progress updates.
5. Prints a markdown table and the ratios RTF(largest)/RTF(15 min) (target <= 1.2) and the largest
   peak over idle (target <= 1 GB), writes bench-out/long/results.json, and stops the server
   (SIGINT to its group, SIGKILL after a timeout), on errors and Ctrl-C too.

A job that fails or times out is a row with its status, not a crash; a server that dies is restarted
for the next size. RSS is summed over the group's processes (shared pages count once per process).
Exit status: 0 when every size succeeded, 1 when some did not (or Ctrl-C), 2 without the data folder.
Per size, bench-out/long/ also keeps the reference and returned text and the result JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from local_dev.bench.long_form_audio import (
    build_recording,
    parse_size,
    reference_texts,
    size_label,
)
from local_dev.bench.long_form_report import markdown_table, summary, summary_lines
from local_dev.bench.server_process import (
    MB,
    ROOT,
    RssSampler,
    Server,
    group_cpu_s,
    group_rss,
    request,
    upload,
)
from local_dev.eval.scoring import normalize_words, wer

OUT_DIR = ROOT / "bench-out" / "long"
DEFAULT_SIZES = "15m,1h,4h"
POLL_S = 1.0
JOB_QUERY = "diarize=true&word_timestamps=true&language=en"
WARMUP_S = 30.0


class Progress:
    """One line per update: rewritten in place on a terminal, at most every 10 s in a log."""

    def __init__(self, label: str):
        self.label, self.tty, self.last = label, sys.stdout.isatty(), 0.0

    def show(self, status: str, done: float, total: float | None, elapsed: float, final: bool = False) -> None:
        now = time.monotonic()
        if not (final or self.tty or now - self.last >= 10):
            return
        self.last = now
        share = f" ({done / total:.0%})" if total else ""
        text = f"  {self.label}: {status} {done:.0f}/{total or 0:.0f} s{share}, {elapsed:.0f} s elapsed"
        if self.tty:
            print("\r" + text.ljust(78), end="\n" if final else "", flush=True)
        else:
            print(text, flush=True)


def run_size(server: Server, mp3: Path, meta: dict, refs: dict[str, dict], timeout: float) -> dict:
    label = meta["label"]
    placements = meta["placements"]
    ref_text = " ".join(refs[p["key"]]["text"] for p in placements)
    row: dict = {"size": label, "status": "not run", "audio_s": meta["duration"], "mp3": mp3.name,
                 "turns": meta["turns"], "distinct_clips": meta["distinct_clips"],
                 "speakers_placed": meta["speakers_placed"],
                 "ref_words": sum(refs[p["key"]]["words"] for p in placements),
                 "idle_rss_mb": server.idle_rss / MB}
    sampler = RssSampler(server.pgid)
    sampler.start()
    start, cpu_start = time.monotonic(), group_cpu_s(server.pgid)
    updates, last_done, job = 0, None, None
    shown = Progress(label)
    try:
        code, body = upload(server.url(f"/api/transcriptions?{JOB_QUERY}"), mp3, timeout=timeout)
        row["upload_s"] = time.monotonic() - start
        if code not in (200, 202) or not body or "job_id" not in body:
            row["status"] = f"upload {code}: {_error_text(body)}"
            return row
        job_id = body["job_id"]
        job = body
        while job["status"] in ("queued", "running"):
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                request("DELETE", server.url(f"/api/jobs/{job_id}"))
                row["status"] = f"timeout after {timeout:.0f} s"
                break
            if not server.alive():
                row["status"] = f"server exited ({server.proc.returncode})"
                break
            time.sleep(POLL_S)
            code, body = request("GET", server.url(f"/api/jobs/{job_id}"), timeout=120)
            if code != 200 or not body:
                row["status"] = f"poll {code}: {_error_text(body)}"
                break
            job = body
            done = float((job.get("progress") or {}).get("done") or 0.0)
            if job["status"] == "running" and last_done is not None and done > last_done:
                updates += 1
            if job["status"] == "running":
                last_done = done
            if job["status"] in ("queued", "running"):
                shown.show(job["status"], done, (job.get("progress") or {}).get("total"), time.monotonic() - start)
        else:
            row["status"] = job["status"]
        progress = job.get("progress") or {}
        shown.show(job["status"], float(progress.get("done") or 0.0), progress.get("total"),
                   time.monotonic() - start, final=True)
    except (OSError, httpx.HTTPError) as exc:
        row["status"] = f"http error: {exc!r}"
    except KeyboardInterrupt:
        row["status"] = "interrupted"
        job = None
    finally:
        row["wall_s"] = time.monotonic() - start
        row["cpu_s"] = group_cpu_s(server.pgid) - cpu_start
        peak = sampler.stop()
        row["peak_rss_mb"] = peak / MB
        row["peak_over_idle_mb"] = (peak - server.idle_rss) / MB
        row["rss_samples"] = sampler.samples
        row["progress_updates"] = updates
        row["progress_ok"] = updates >= 5
    row["rtf"] = row["wall_s"] / row["audio_s"]
    row["cpu_rtf"] = row["cpu_s"] / row["audio_s"]
    if job and job.get("error"):
        row["error"] = job["error"]
        row["status"] += f" ({_error_text(job)[:100]})"
    result = (job or {}).get("result")
    if job and job.get("status") == "succeeded" and result:
        segments = result.get("segments") or []
        hyp_text = " ".join(s.get("text", "") for s in segments)
        row["words"] = len(normalize_words(hyp_text))
        row["word_entries"] = sum(len(s.get("words") or []) for s in segments)
        row["word_share"] = row["words"] / row["ref_words"] if row["ref_words"] else None
        row["wer"] = wer(ref_text, hyp_text)
        stem = mp3.with_suffix("")
        Path(f"{stem}.ref.txt").write_text(ref_text + "\n")
        Path(f"{stem}.hyp.txt").write_text(hyp_text + "\n")
        Path(f"{stem}.result.json").write_text(json.dumps(result) + "\n")
        row["speakers_found"] = len(result.get("speakers") or {s.get("speaker") for s in segments})
    return row


def _error_text(body: dict | None) -> str:
    if not body:
        return "no body"
    err = body.get("error")
    if isinstance(err, dict):
        return f"{err.get('code')}: {err.get('message')}"
    return str(err or body)[:200]


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated lengths (default {DEFAULT_SIZES})")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a job may take this many times its audio length (at least 10 min)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the unmeasured 30 s job after each server start (first-call costs)")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background

    try:
        recordings = [build_recording(s, args.seed, args.out) for s in sizes]
        warmup = None if args.no_warmup else build_recording(WARMUP_S, args.seed + 1, args.out)
        used = recordings + ([warmup] if warmup else [])
        refs = reference_texts({p["key"] for _, m in used for p in m["placements"]}, args.out / "refs.json")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for mp3, meta in recordings:
        print(f"{mp3.name}: {meta['duration']:.0f} s, {meta['turns']} turns in {meta['conversations']} conversations, "
              f"{meta['speakers_placed']} speakers, {meta['distinct_clips']} distinct clips, "
              f"{mp3.stat().st_size / MB:.1f} MB", flush=True)

    server = Server(args.out / "server.log")
    rows: list[dict] = []
    idle_readings: list[dict] = []
    try:
        for mp3, meta in recordings:
            if not server.alive():
                server.stop()
                print("starting the server (python -m local_dev serve) ...", flush=True)
                server.start()
                idle = {"after_load_mb": server.idle_rss / MB}
                idle_readings.append(idle)
                print(f"  ready on port {server.port}; idle RSS of its process group: {server.idle_rss / MB:.0f} MB "
                      f"({group_rss(server.pgid)[1]} processes)", flush=True)
                if warmup:
                    w = run_size(server, *warmup, refs, timeout=600.0)
                    if w["status"] == "interrupted":
                        raise KeyboardInterrupt
                    idle["after_warmup_mb"] = server.measure_idle() / MB
                    print(f"  warm-up job ({warmup[1]['label']}, not measured): {w['status']}, {w['wall_s']:.1f} s; "
                          f"idle RSS now {idle['after_warmup_mb']:.0f} MB (peak over idle still counts from "
                          f"{server.idle_rss / MB:.0f} MB)", flush=True)
            print(f"{meta['label']}: uploading {mp3.name} ...", flush=True)
            row = run_size(server, mp3, meta, refs, timeout=max(600.0, args.timeout_factor * meta["duration"]))
            rows.append(row)
            if row["status"] == "interrupted":
                raise KeyboardInterrupt
            print(f"  {row['status']}, {row['wall_s']:.1f} s, peak {row['peak_rss_mb']:.0f} MB", flush=True)
            if not row["status"].startswith("succeeded") and not server.alive():
                print(f"  the server exited; its log ends:\n{server.log_tail(1500)}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the server", file=sys.stderr)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
    finally:
        if server.proc is not None:
            began = time.monotonic()
            server.stop()
            print(f"server stopped in {time.monotonic() - began:.1f} s", flush=True)

    s = summary(rows)
    print()
    print(markdown_table(rows))
    print()
    for line in summary_lines(s):
        print(line)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": _git_commit(),
               "cpu_count": os.cpu_count(), "seed": args.seed, "sizes": [size_label(x) for x in sizes],
               "server_starts": idle_readings, "job_query": JOB_QUERY, "rows": rows, "summary": s}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out / 'results.json'}")
    complete = len(rows) == len(recordings) and all(r["status"] == "succeeded" for r in rows)
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
