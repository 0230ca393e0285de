"""Long-form section of `make bench`: 15 min, 1 h and 4 h recordings through the job API of a real server.

    python -m local_dev.bench_long [--sizes 15m,1h,4h] [--seed 1234]     (or: make bench-long SIZES=15m)

1. Assembles each recording (local_dev/bench_long_audio.py: real LibriSpeech voices in conversations of
   2-6 speakers, the LibriVox/JFK clips sprinkled in, mp3 64 kbps), cached in bench-out/long/.
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
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from local_dev.bench_long_audio import (
    build_recording,
    parse_size,
    reference_texts,
    size_label,
)

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench-out" / "long"
DEFAULT_SIZES = "15m,1h,4h"
SAMPLE_S = 0.5
POLL_S = 1.0
MB = 1024 * 1024
RTF_RATIO_TARGET = 1.2
PEAK_OVER_IDLE_TARGET_MB = 1024.0
JOB_QUERY = "diarize=true&word_timestamps=true&language=en"
WARMUP_S = 30.0


# --- RSS of a process group -------------------------------------------------------------------------

def _pgid_and_rss(proc: Path, pid: str) -> tuple[int, int] | None:
    """(pgid, rss bytes) of one /proc entry; None if it is gone or not readable."""
    try:
        stat = (proc / pid / "stat").read_text()
        status = (proc / pid / "status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
    pgid = int(fields[2])
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return pgid, int(line.split()[1]) * 1024
    return pgid, 0  # a zombie or a kernel thread has no VmRSS


def group_rss(pgid: int, proc: Path | str = "/proc") -> tuple[int, int]:
    """(total RSS in bytes, number of processes) of every process whose process group is `pgid`."""
    proc = Path(proc)
    total = count = 0
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        found = _pgid_and_rss(proc, entry)
        if found and found[0] == pgid:
            total += found[1]
            count += 1
    return total, count


def group_cpu_s(pgid: int, proc: Path | str = "/proc") -> float:
    """CPU seconds (user + system) used so far by the processes of group `pgid`. Unlike wall time, it
    hardly moves when other work shares the cores, so it compares sizes measured at different loads."""
    proc, ticks = Path(proc), 0
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            stat = (proc / entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session tty tpgid flags ... utime stime
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    def __init__(self, pgid: int, period: float = SAMPLE_S):
        super().__init__(daemon=True)
        self.pgid, self.period = pgid, period
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss, _ = group_rss(self.pgid)
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._halt.wait(self.period)

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=5)
        return self.peak


# --- the server -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m local_dev serve` in its own process group, as `make run` starts it."""

    def __init__(self, log_path: Path, start_timeout: float = 600.0):
        self.log_path, self.start_timeout = log_path, start_timeout
        self.proc: subprocess.Popen | None = None
        self.storage: tempfile.TemporaryDirectory | None = None
        self.port = 0
        self.idle_rss = 0

    def start(self) -> None:
        python = ROOT / ".venv" / "bin" / "python"
        self.port = free_port()
        self.storage = tempfile.TemporaryDirectory(prefix="whospoke-bench-long-")
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "AUDIO_STORAGE_PATH": self.storage.name,
               "HF_HUB_OFFLINE": "1", "API_KEYS": "", "RATE_LIMIT_PER_MIN": "0"}
        log = open(self.log_path, "ab")
        log.write(f"\n=== {datetime.now(timezone.utc).isoformat()} port {self.port}\n".encode())
        log.flush()
        self.proc = subprocess.Popen([str(python if python.exists() else sys.executable), "-m", "local_dev", "serve"],
                                     cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} before answering; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            try:
                if request("GET", self.url("/healthz"), timeout=5)[0] == 200:
                    break
            except (OSError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /healthz in {self.start_timeout:.0f} s; "
                                   f"see {self.log_path}")
            time.sleep(0.5)
        time.sleep(3)  # let the just-loaded workers settle
        self.idle_rss = self.measure_idle()

    def measure_idle(self) -> int:
        readings = []
        for _ in range(5):
            readings.append(group_rss(self.pgid)[0])
            time.sleep(SAMPLE_S)
        return sorted(readings)[len(readings) // 2]

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group id

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                _signal_group(self.pgid, signal.SIGINT)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + 5
            while group_rss(self.pgid)[1] and time.monotonic() < deadline:
                time.sleep(0.2)  # workers wind down after the leader
            if self.proc.poll() is None or group_rss(self.pgid)[1]:
                _signal_group(self.pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        finally:
            self.proc = None
            if self.storage is not None:
                self.storage.cleanup()
                self.storage = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


# --- HTTP -------------------------------------------------------------------------------------------

def request(method: str, url: str, timeout: float = 60.0) -> tuple[int, dict | None]:
    return _answer(httpx.request(method, url, timeout=timeout))


def upload(url: str, path: Path, timeout: float) -> tuple[int, dict | None]:
    """POST `path` as the multipart field `file` (httpx streams it from disk)."""
    with open(path, "rb") as f:
        return _answer(httpx.post(url, files={"file": (path.name, f, "audio/mpeg")}, timeout=timeout))


def _answer(response: httpx.Response) -> tuple[int, dict | None]:
    try:
        return response.status_code, response.json() if response.content else None
    except ValueError:
        return response.status_code, {"raw": response.text[:500]}


# --- one size ---------------------------------------------------------------------------------------

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
    from local_dev.scoring import normalize_words, wer

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


# --- report -----------------------------------------------------------------------------------------

def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| size | status | audio (s) | wall (s) | RTF | CPU s / audio s | peak RSS (MB) | peak - idle (MB) "
             "| words / ref | WER | speakers found / placed | progress updates |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        words = (f"{r['words']} / {r['ref_words']} ({r['word_share']:.1%})" if r.get("words") is not None
                 else f"- / {r.get('ref_words', '-')}")
        updates = f"{r.get('progress_updates', 0)} ({'ok' if r.get('progress_ok') else 'under 5'})"
        status = r["status"].replace("|", "/")
        lines.append(f"| {r['size']} | {status} | {_f(r.get('audio_s'), '.1f')} | {_f(r.get('wall_s'), '.1f')} "
                     f"| {_f(r.get('rtf'), '.4f')} | {_f(r.get('cpu_rtf'), '.4f')} | {_f(r.get('peak_rss_mb'), '.0f')} "
                     f"| {_f(r.get('peak_over_idle_mb'), '.0f')} | {words} | {_f(r.get('wer'), '.3f')} "
                     f"| {r.get('speakers_found', '-')} / {r.get('speakers_placed', '-')} "
                     f"| {updates} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> dict:
    """RTF(largest)/RTF(15 min, else the smallest) over the sizes that succeeded; largest peak over idle."""
    ok = sorted((r for r in rows if r["status"] == "succeeded"), key=lambda r: r["audio_s"])
    out: dict = {"rtf_ratio": None, "rtf_ratio_label": None, "rtf_ratio_target": RTF_RATIO_TARGET,
                 "peak_over_idle_mb": None, "peak_over_idle_target_mb": PEAK_OVER_IDLE_TARGET_MB,
                 "peak_over_idle_includes_unfinished": False}
    if len(ok) >= 2:
        base = next((r for r in ok if r["size"] == "15m"), ok[0])
        top = ok[-1]
        if top is not base:
            out["rtf_ratio"] = top["rtf"] / base["rtf"]
            out["rtf_ratio_label"] = f"RTF({top['size']})/RTF({base['size']})"
            if top.get("cpu_rtf") and base.get("cpu_rtf"):
                out["cpu_rtf_ratio"] = top["cpu_rtf"] / base["cpu_rtf"]
                out["cpu_rtf_ratio_label"] = f"CPU-RTF({top['size']})/CPU-RTF({base['size']})"
    measured = [r for r in rows if r.get("peak_over_idle_mb") is not None]
    if measured:
        out["peak_over_idle_mb"] = max(r["peak_over_idle_mb"] for r in measured)
        out["peak_over_idle_includes_unfinished"] = any(r["status"] != "succeeded" for r in measured)
    return out


def summary_lines(s: dict) -> list[str]:
    lines = []
    if s["rtf_ratio"] is None:
        lines.append(f"RTF ratio: n/a (needs two sizes that succeeded; target <= {RTF_RATIO_TARGET})")
    else:
        met = "met" if s["rtf_ratio"] <= RTF_RATIO_TARGET else "NOT met"
        lines.append(f"{s['rtf_ratio_label']}: {s['rtf_ratio']:.3f} (target <= {RTF_RATIO_TARGET}) {met}")
        if s.get("cpu_rtf_ratio") is not None:
            met = "met" if s["cpu_rtf_ratio"] <= RTF_RATIO_TARGET else "NOT met"
            lines.append(f"{s['cpu_rtf_ratio_label']}: {s['cpu_rtf_ratio']:.3f} (CPU seconds, steadier under load) {met}")
    if s["peak_over_idle_mb"] is not None:
        met = "met" if s["peak_over_idle_mb"] <= PEAK_OVER_IDLE_TARGET_MB else "NOT met"
        note = " (includes jobs that did not finish)" if s["peak_over_idle_includes_unfinished"] else ""
        lines.append(f"largest peak over idle: {s['peak_over_idle_mb']:.0f} MB "
                     f"(target <= {PEAK_OVER_IDLE_TARGET_MB:.0f} MB) {met}{note}")
    return lines


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
