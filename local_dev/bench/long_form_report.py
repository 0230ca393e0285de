"""The long-form bench's report: a markdown table per size and the ratios against their targets."""

from __future__ import annotations

RTF_RATIO_TARGET = 1.2
PEAK_OVER_IDLE_TARGET_MB = 1024.0


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
