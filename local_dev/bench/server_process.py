"""The server a bench measures: `python -m local_dev serve` in its own process group, as `make run`
starts it, the RSS and CPU time of that whole group (read from /proc), and HTTP helpers to talk to it.
Used by the long-form and streaming benches (local_dev/bench/long_form.py, streaming.py)."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_S = 0.5
MB = 1024 * 1024


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

    def __init__(self, log_path: Path, start_timeout: float = 600.0, env: dict[str, str] | None = None):
        self.log_path, self.start_timeout = log_path, start_timeout
        self.env = dict(env or {})  # settings over the bench's defaults below (API_KEYS, limits)
        self.proc: subprocess.Popen | None = None
        self.storage: tempfile.TemporaryDirectory | None = None
        self.port = 0
        self.idle_rss = 0

    def start(self) -> None:
        python = ROOT / ".venv" / "bin" / "python"
        self.port = free_port()
        self.storage = tempfile.TemporaryDirectory(prefix="whospoke-bench-long-")
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "AUDIO_STORAGE_PATH": self.storage.name,
               "HF_HUB_OFFLINE": "1", "API_KEYS": "", "RATE_LIMIT_PER_MIN": "0", **self.env}
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
