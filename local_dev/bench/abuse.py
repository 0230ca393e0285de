"""`make bench-abuse`: what each attack of issue 20 costs a running server, beside one honest live session.

The server is the real one, `python -m local_dev serve` as `make run` starts it (local_dev/bench/
server_process.py), with two API keys: the attacker's and the honest user's, as an exposed server runs
(`--no-keys`: as `make run` serves, where both share 127.0.0.1 and its per-address limits). One server
serves the whole run. First the honest session alone: real speech (the team's dev recordings) streamed at
real time over `/ws/stream` in PCM16 for `--seconds`. Then, per attack (local_dev/bench/abuse_attacks.py,
in its own process, for `--seconds`), once the server has settled (its RSS steady, its CPU quiet):
- the server group's RSS growth (the server and all its children, read from /proc: peak minus before),
- /healthz latency sampled every 0.25 s throughout (a fresh connection each time; a timeout or an
  error counts as the timeout), max and p99,
- the honest session's final latency p50, beside the same session alone,
- what the attacker sent and what the server answered (close codes, error codes, refused handshakes),
- how long the server took to settle afterwards (parked streams, orphaned work).
Targets: RSS growth <= 300 MB per attack, /healthz <= 1 s throughout, honest final p50 <= 1.5x solo.
Writes bench-out/abuse/report.md and results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from local_dev.bench.abuse_attacks import ATTACKS
from local_dev.bench.abuse_payloads import pcm16, speech
from local_dev.bench.abuse_report import Honest, Measured, as_json, settled, table
from local_dev.bench.server_process import ROOT, RssSampler, Server, group_cpu_s, group_rss
from shared.live.client import StreamClient

OUT = ROOT / "bench-out" / "abuse"
PROBE_S = 0.25


class HealthProbe(threading.Thread):
    """GET /healthz every PROBE_S seconds on a fresh connection; each latency, a failure as `timeout`."""

    def __init__(self, url: str, timeout: float):
        super().__init__(daemon=True)
        self.url, self.timeout = url, timeout
        self.latencies: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=self.timeout, limits=limits, trust_env=False) as client:
            while not self._halt.is_set():
                started = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.monotonic() - started
                self.failures += not ok
                self.latencies.append(min(took, self.timeout) if ok else self.timeout)
                self._halt.wait(max(0.0, PROBE_S - took))

    def stop(self) -> list[float]:
        self._halt.set()
        self.join(timeout=self.timeout + 5)
        return self.latencies


def honest_session(ws_url: str, key: str | None, pcm: bytes, speed: float = 1.0) -> Honest:
    """The honest user's live session: finals' latencies, or why it failed (refused, cut off, no finals)."""
    client = StreamClient(ws_url, api_key=key, speed=speed)
    try:
        run = asyncio.run(client.run(pcm, timeout=len(pcm) / 32_000 / max(speed, 1) + 180))
    except Exception as exc:  # noqa: BLE001 - the report says how the session failed
        return Honest(failure=f"{type(exc).__name__}: {str(exc)[:120]}")
    final_at = {r.event["utterance"]: r.at for r in run.events if r.event.get("type") == "final"}
    latencies = [final_at[f["utterance"]] - f["end"] / max(speed, 1e-9) for f in run.finals]
    errors = sorted({e.get("code", "?") for e in run.of("error")})
    if not latencies:
        return Honest(failure="no finals" + (f" (errors: {', '.join(errors)})" if errors else ""))
    return Honest(latencies=latencies)


def settle(server: Server, max_s: float, sampler: RssSampler | None = None) -> tuple[int, float, bool]:
    """Waits (at most `max_s`) until the server's RSS is steady and its CPU quiet: (RSS then, seconds
    waited, whether it settled)."""
    started, readings = time.monotonic(), []
    while True:
        rss, _ = group_rss(server.pgid)
        now = time.monotonic()
        readings = [r for r in readings if r[0] >= now - 10] + [(now, rss, group_cpu_s(server.pgid))]
        if settled(readings) or now - started >= max_s or not server.alive():
            return rss, now - started, settled(readings)
        time.sleep(0.5)


class AttackProcess:
    """`python -m local_dev.bench.abuse_attacks NAME ...`; its stdout lines read on a thread."""

    def __init__(self, name: str, server: Server, key: str | None, seconds: float, log_path: Path):
        python = ROOT / ".venv" / "bin" / "python"
        env = {**os.environ, "BENCH_ABUSE_KEY": key or ""}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(python if python.exists() else sys.executable), "-m", "local_dev.bench.abuse_attacks", name,
                 "--url", server.url(""), "--seconds", str(seconds)],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.result: dict | None = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.decode(errors="replace").strip())
        self.lines.put(None)

    def ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                return False
            if line == "ready":
                return True
        return False

    def finish(self, timeout: float) -> dict | None:
        try:
            self.proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        while (line := self.lines.get(timeout=10)) is not None:
            if line.startswith("{"):
                self.result = json.loads(line)
        return self.result


ALONE = "none (the honest session alone)"


def measure(name: str | None, server: Server, key: str | None, honest_key: str | None, pcm: bytes,
            args: argparse.Namespace, rss_before: int) -> Measured:
    """One attack (None: none) beside the honest session, from a settled server to a settled server."""
    m = Measured(name or ALONE, rss_before=rss_before, rss_peak=rss_before)
    attack = AttackProcess(name, server, key, args.seconds, OUT / "attacks.log") if name else None
    if attack is not None and not attack.ready(timeout=600):
        attack.finish(5)
        m.problem = "the attack did not start (see bench-out/abuse/attacks.log)"
        return m
    started = time.monotonic()
    sampler, probe = RssSampler(server.pgid, PROBE_S), HealthProbe(server.url("/healthz"), args.healthz_timeout)
    sampler.start()
    probe.start()
    ws_url = server.url("/ws/stream").replace("http://", "ws://")
    m.honest = honest_session(ws_url, honest_key, pcm)
    result = {"answers": {}, "sent": {}}
    if attack is not None:
        result = attack.finish(args.seconds + 30 - (time.monotonic() - started))
    time.sleep(1)
    m.healthz = probe.stop()
    if result is None:
        m.problem = "the attack ended without a result (see bench-out/abuse/attacks.log)"
    else:
        m.answers, m.sent, m.attacker_peak_mb = result["answers"], result["sent"], result.get("attacker_peak_mb", 0)
    if not server.alive():
        m.problem = f"the server died (exit {server.proc.returncode})"
    m.rss_after, m.settled_s, m.settled = settle(server, args.settle_max)
    m.rss_peak = max(m.rss_before, sampler.stop())
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="each attack's length (and the honest session's)")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"some of {','.join(ATTACKS)}")
    parser.add_argument("--keys", action=argparse.BooleanOptionalAction, default=True,
                        help="serve with API keys: the honest user's, and a fresh one for each attack (its own "
                        "opens a minute and streams); --no-keys: all share 127.0.0.1's limits, from one attack "
                        "to the next too")
    parser.add_argument("--settle-max", type=float, default=60.0, help="longest wait for the server to settle")
    parser.add_argument("--healthz-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()]
    if unknown := [n for n in names if n not in ATTACKS]:
        parser.error(f"unknown attacks {unknown}: choose from {', '.join(ATTACKS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    keys = {name: secrets.token_urlsafe(24) if args.keys else None for name in [ALONE, *names]}
    honest_key = keys.pop(ALONE)
    env = {"API_KEYS": ",".join([honest_key, *keys.values()])} if args.keys else {}
    pcm = pcm16(speech(args.seconds))
    server = Server(OUT / "server.log", env=env)
    server.start()
    rows: list[Measured] = []
    solo = Honest(failure="not measured")
    try:
        ws_url = server.url("/ws/stream").replace("http://", "ws://")
        honest_session(ws_url, honest_key, pcm[: 5 * 32_000], speed=0)  # warm-up
        rss_before, _, _ = settle(server, args.settle_max)
        for name in [None, *names]:
            print(f"{name or ALONE}: {args.seconds:g} s from {rss_before / 2**20:.0f} MB", flush=True)
            m = measure(name, server, keys.get(name), honest_key, pcm, args, rss_before)
            rows.append(m)
            if name is None:
                solo = m.honest
            print(f"  RSS +{m.growth_mb:.0f} MB, /healthz max {max(m.healthz, default=float('nan')):.2f} s, honest "
                  f"p50 {m.honest.p50:.2f} s {m.honest.failure}, settled after {m.settled_s:.0f} s", flush=True)
            if not server.alive():  # the next attack gets a fresh server, as a supervisor would restart it
                server.stop()
                server = Server(OUT / "server.log", env=env)
                server.start()
                rss_before, _, _ = settle(server, args.settle_max)
            else:
                rss_before = m.rss_after
            write(rows, solo, argv)  # after each attack: a run cut short keeps what it measured
    finally:
        server.stop()
    print("\n" + write(rows, solo, argv))
    return 0


def write(rows: list[Measured], solo: Honest, argv: list[str] | None) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m local_dev.bench.abuse", *(argv if argv is not None else sys.argv[1:])])
    report = f"Measured on {when} (`{command}`, {os.cpu_count()} cores).\n\n" + table(rows, solo)
    (OUT / "report.md").write_text(report + "\n")
    (OUT / "results.json").write_text(json.dumps(as_json(rows, solo), indent=1))
    return report


if __name__ == "__main__":
    raise SystemExit(main())
