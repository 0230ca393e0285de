"""`make bench-abuse`'s numbers and verdicts (local_dev/bench/abuse.py measures them): one row per attack,
the targets met or not, and what the server answered. Pure functions of the measurements."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

MB = 1024 * 1024
RSS_GROWTH_MB = 300.0  # targets: server group RSS growth per attack,
HEALTHZ_S = 1.0  # /healthz latency throughout,
HONEST_RATIO = 1.5  # the honest session's final p50 against the same session alone


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


@dataclass
class Honest:
    """The honest live session: its finals' latencies (wall seconds after the utterance's end), or why
    it failed."""

    latencies: list[float] = field(default_factory=list)
    failure: str = ""

    @property
    def p50(self) -> float:
        return pct(self.latencies, 50)


@dataclass
class Measured:
    attack: str
    rss_before: int = 0  # bytes, the settled group RSS just before the attack
    rss_peak: int = 0
    rss_after: int = 0  # once settled after it
    healthz: list[float] = field(default_factory=list)  # seconds; a timeout or a failure counts as the timeout
    honest: Honest = field(default_factory=Honest)
    answers: dict[str, int] = field(default_factory=dict)  # what the server answered (close and error codes)
    sent: dict[str, int] = field(default_factory=dict)  # what the attacker did
    attacker_peak_mb: int = 0  # the attacking process's own peak RSS: the bench stays bounded too
    settled_s: float = math.nan  # seconds the server took to settle after the attack
    settled: bool = True
    problem: str = ""  # the attack could not run, or the server died

    @property
    def growth_mb(self) -> float:
        return max(0, self.rss_peak - self.rss_before) / MB

    @property
    def kept_mb(self) -> float:
        return (self.rss_after - self.rss_before) / MB

    @property
    def outcome(self) -> str:
        """'refused' when the server turned every session away at once (nothing was opened), else 'ran'."""
        if self.problem:
            return self.problem
        if not self.sent and not self.answers:
            return "-"
        opened = self.sent.get("sessions opened", 0) + self.sent.get("sampled requests taken", 0)
        return "refused" if opened == 0 and self.answers else "ran"


def verdicts(m: Measured, solo_p50: float) -> dict[str, bool]:
    honest_ok = not m.honest.failure and m.honest.p50 <= HONEST_RATIO * solo_p50
    return {"rss": m.growth_mb <= RSS_GROWTH_MB, "healthz": bool(m.healthz) and max(m.healthz) <= HEALTHZ_S,
            "honest": bool(honest_ok)}


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def counts(values: dict[str, int], top: int = 6) -> str:
    """'close 4429 x12, error too_many_opens x12, ...', the most frequent first."""
    if not values:
        return "-"
    common = Counter(values).most_common()
    shown = ", ".join(f"{k} x{v:,}" for k, v in common[:top])
    return shown + (f", {len(common) - top} more" if len(common) > top else "")


def honest_cell(m: Measured, solo_p50: float) -> str:
    if m.honest.failure:
        return f"failed: {m.honest.failure}"
    return f"{m.honest.p50:.2f} ({m.honest.p50 / solo_p50:.1f}x solo, {len(m.honest.latencies)} finals)"


HEADER = ["attack", "outcome", "RSS before (MB)", "RSS growth (MB)", "kept after (MB)", "/healthz max / p99 (s)",
          "honest final p50 (s)", "settled after (s)", f"RSS <= {RSS_GROWTH_MB:g} MB", f"/healthz <= {HEALTHZ_S:g} s",
          f"honest <= {HONEST_RATIO:g}x solo"]


def table(rows: list[Measured], solo: Honest) -> str:
    """The targets' table, then what each attack sent and what the server answered (markdown)."""
    lines = [f"Honest session alone: final p50 {solo.p50:.2f} s over {len(solo.latencies)} finals"
             + (f" (failed: {solo.failure})" if solo.failure else "") + ".", "",
             "| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for m in rows:
        v = verdicts(m, solo.p50)
        health = f"{max(m.healthz):.2f} / {pct(m.healthz, 99):.2f}" if m.healthz else "-"
        settled = f"{m.settled_s:.0f}" + ("" if m.settled else " (not yet)")
        cells = [m.attack, m.outcome, f"{m.rss_before / MB:.0f}", f"{m.growth_mb:.0f}", f"{m.kept_mb:+.0f}", health,
                 honest_cell(m, solo.p50), settled, met(v["rss"]), met(v["healthz"]), met(v["honest"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| attack | the attacker sent | the server answered | attacker's peak RSS (MB) |",
              "|---|---|---|---:|"]
    lines += [f"| {m.attack} | {counts(m.sent)} | {counts(m.answers)} | {m.attacker_peak_mb} |"
              for m in rows if m.sent or m.answers]
    return "\n".join(lines)


def as_json(rows: list[Measured], solo: Honest) -> dict:
    return {"solo": asdict(solo), "attacks": [asdict(m) | {"growth_mb": round(m.growth_mb, 1),
                                                            "verdicts": verdicts(m, solo.p50)} for m in rows]}


def settled(readings: list[tuple[float, int, float]], window_s: float = 5.0, rss_tolerance: int = 16 * MB,
            cpu_share: float = 0.25) -> bool:
    """Whether the server is at rest over the last `window_s` of (time, group RSS bytes, group CPU seconds)
    readings: its RSS moved less than `rss_tolerance` and it used under `cpu_share` of one core."""
    if not readings or readings[-1][0] - readings[0][0] < window_s:
        return False
    last = [r for r in readings if r[0] >= readings[-1][0] - window_s]
    span = last[-1][0] - last[0][0]
    rss = [r[1] for r in last]
    return max(rss) - min(rss) <= rss_tolerance and (last[-1][2] - last[0][2]) <= cpu_share * span
