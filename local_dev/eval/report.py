"""`make eval`'s summary: per-file measurements (local_dev/eval/__main__.py) added up per half and group,
as markdown tables to paste into the README. Error rates are totals (errors over all files / reference
over all files), not means of per-file rates; JER is the mean over files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

GROUP_ORDER = ["conv-clean", "conv-noise", "conv-reverb", "conv-phone", "same-clean", "same-phone", "real",
               "words-clean", "words-quiet", "words-noisy", "words-reverb", "words-mixed"]


def der(c: dict) -> float:
    return (c["confusion"] + c["missed"] + c["false_alarm"]) / c["total"] if c["total"] else 0.0


def wer(w: dict) -> float:
    errors = w["substitutions"] + w["deletions"] + w["insertions"]
    return errors / w["ref_words"] if w["ref_words"] else float(errors > 0)


def _add(dicts: list[dict], keys) -> dict:
    return {k: sum(d[k] for d in dicts) for k in keys}


SYNTHETIC = ("conv", "same")  # the kinds split into tune and check halves, each reported on its own


def _kind(group: str) -> str:
    return group.split("-")[0]


def _rows(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """(label, records) per half, kind and group (conv-*, same-*), with a total per half and kind and over
    both halves per kind; then the dev groups (real, words-*)."""
    out = []
    for half in ("tune", "check"):
        for kind in SYNTHETIC:
            rows = [r for r in records if r["half"] == half and _kind(r["group"]) == kind]
            groups = [g for g in GROUP_ORDER if any(r["group"] == g for r in rows)]
            out += [(f"{half} / {g}", [r for r in rows if r["group"] == g]) for g in groups]
            if len(groups) > 1:
                out.append((f"**{half}, {kind} all**", rows))
    for kind in SYNTHETIC:
        rows = [r for r in records if r["half"] in ("tune", "check") and _kind(r["group"]) == kind]
        if {r["half"] for r in rows} == {"tune", "check"}:
            out.append((f"**tune + check, {kind}**", rows))
    dev = [r for r in records if r["half"] == "dev"]
    out += [(g, [r for r in dev if r["group"] == g]) for g in GROUP_ORDER if any(r["group"] == g for r in dev)]
    words = [r for r in dev if r["group"].startswith("words")]
    if len({r["group"] for r in words}) > 1:
        out.append(("**words, all**", words))
    return out


def diarization_table(records: list[dict]) -> str:
    lines = [
        ("| set | files | audio (min) | DER c0.5 | DER c0 | DER c0.5 no ovl | JER | count right | count ±1 "
         "| speech missed | RTF |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("confusion", "missed", "false_alarm", "total")
    for label, rows in _rows([r for r in records if "diar" in r]):
        d = [r["diar"] for r in rows]
        audio = sum(r["duration"] for r in rows)
        right = sum(x["found"] == r["speakers"] for x, r in zip(d, rows))
        near = sum(abs(x["found"] - r["speakers"]) <= 1 for x, r in zip(d, rows))
        speech, missed = sum(x["speech_s"] for x in d), sum(x["missed_s"] for x in d)
        rtf = sum(x["rtf"] * r["duration"] for x, r in zip(d, rows)) / audio
        lines.append(
            f"| {label} | {len(rows)} | {audio / 60:.1f} | {der(_add([x['der05'] for x in d], keys)):.1%} "
            f"| {der(_add([x['der0'] for x in d], keys)):.1%} | {der(_add([x['der05_noovl'] for x in d], keys)):.1%} "
            f"| {sum(x['jer'] for x in d) / len(d):.1%} "
            f"| {right}/{len(rows)} | {near}/{len(rows)} | {missed:.1f} s ({missed / max(speech, 1e-9):.1%}) "
            f"| {rtf:.3f} |"
        )
    return "\n".join(lines)


def real_table(records: list[dict]) -> str:
    """The verdict: every real recording on its own line (speakers found/true, DER at collar 0.5), and
    their total (count right, within +-1, DER over all of them)."""
    real = [r for r in records if r["group"] == "real" and "diar" in r]
    lines = ["| real recording | seconds | speakers found/true | count | DER c0.5 | DER c0.5 no ovl |",
             "|---|---:|---:|---|---:|---:|"]
    keys = ("confusion", "missed", "false_alarm", "total")
    for r in real:
        d, k = r["diar"], r["speakers"]
        verdict = "right" if d["found"] == k else ("+-1" if abs(d["found"] - k) <= 1 else "off")
        lines.append(f"| {r['name']} | {r['duration']:.1f} | {d['found']}/{k} | {verdict} "
                     f"| {der(d['der05']):.1%} | {der(d['der05_noovl']):.1%} |")
    right = sum(r["diar"]["found"] == r["speakers"] for r in real)
    near = sum(abs(r["diar"]["found"] - r["speakers"]) <= 1 for r in real)
    lines.append(f"| **all {len(real)}** | {sum(r['duration'] for r in real):.1f} | right {right}/{len(real)} "
                 f"| +-1 {near}/{len(real)} | {der(_add([r['diar']['der05'] for r in real], keys)):.1%} "
                 f"| {der(_add([r['diar']['der05_noovl'] for r in real], keys)):.1%} |")
    return "\n".join(lines)


def count_table(records: list[dict]) -> str:
    """Per kind and half: conversations with the speaker count right, and the mean count found, per true
    count; and how many were under- and over-counted."""
    conv = [r for r in records if "diar" in r and r["half"] in ("tune", "check")]
    counts = sorted({r["speakers"] for r in conv})
    lines = ["| set | " + " | ".join(f"{k} spk" for k in counts) + " | under | over |",
             "|---|" + "---:|" * (len(counts) + 2)]
    for kind in SYNTHETIC:
        for half in ("tune", "check"):
            rows = [r for r in conv if r["half"] == half and _kind(r["group"]) == kind]
            if not rows:
                continue
            cells = []
            for k in counts:
                some = [r for r in rows if r["speakers"] == k]
                right = sum(r["diar"]["found"] == k for r in some)
                mean = sum(r["diar"]["found"] for r in some) / max(len(some), 1)
                cells.append(f"{right}/{len(some)} (found {mean:.1f})" if some else "-")
            under = sum(r["diar"]["found"] < r["speakers"] for r in rows)
            over = sum(r["diar"]["found"] > r["speakers"] for r in rows)
            lines.append(f"| {kind} {half} | " + " | ".join(cells) + f" | {under}/{len(rows)} | {over}/{len(rows)} |")
    return "\n".join(lines)


def words_table(records: list[dict]) -> str:
    lines = [
        ("| set | files | ref words | WER ours | WER plain | deleted ours | deleted plain | missed s ours | "
         "missed s plain | RTF ours | RTF plain |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("ref_words", "substitutions", "deletions", "insertions")
    for label, rows in _rows([r for r in records if "words" in r]):
        o = _add([r["words"]["ours"] for r in rows], keys)
        p = _add([r["words"]["plain"] for r in rows], keys)
        audio = sum(r["duration"] for r in rows)

        def total(side, key, rows=rows):
            return sum(r["words"][side][key] * (r["duration"] if key == "rtf" else 1) for r in rows)

        lines.append(
            f"| {label} | {len(rows)} | {o['ref_words']} | {wer(o):.1%} | {wer(p):.1%} | {o['deletions']} "
            f"| {p['deletions']} | {total('ours', 'missed_s'):.1f} | {total('plain', 'missed_s'):.1f} "
            f"| {total('ours', 'rtf') / audio:.3f} | {total('plain', 'rtf') / audio:.3f} |"
        )
    return "\n".join(lines)


def targets(records: list[dict], hints: bool) -> list[str]:
    """Issue 18's targets, where this run measured what they need."""
    out = []
    keys = ("confusion", "missed", "false_alarm", "total")
    for kind, label, want_right, want_der in (("same", "same-channel check half", 0.70, 0.12),
                                              ("conv", "synthetic (conv) check half", None, 0.057)):
        check = [r for r in records if r["half"] == "check" and _kind(r["group"]) == kind and "diar" in r]
        if not check:
            continue
        d = der(_add([r["diar"]["der05"] for r in check], keys))
        right = sum(r["diar"]["found"] == r["speakers"] for r in check)
        if hints:
            out.append(f"{label}, num_speakers given: DER c0.5 {d:.1%}")
        elif want_right is not None:
            out.append(f"{label}, no hints: count right {right}/{len(check)} = {right / len(check):.0%} "
                       f"(target >= 70%) {_met(right / len(check) >= want_right)}, DER c0.5 {d:.1%} "
                       f"(target <= 12%) {_met(d <= want_der)}")
        else:
            out.append(f"{label}, no hints: count right {right}/{len(check)}, DER c0.5 {d:.1%} (not worse than "
                       f"today's 32/51 and 5.7%) {_met(d <= want_der and right >= 32 * len(check) / 51)}")
    real = [r for r in records if r["group"] == "real" and "diar" in r]
    if real and not hints:
        right = sum(r["diar"]["found"] == r["speakers"] for r in real)
        near = sum(abs(r["diar"]["found"] - r["speakers"]) <= 1 for r in real)
        d = der(_add([r["diar"]["der05"] for r in real], keys))
        out.append(f"real recordings ({len(real)}): count right {right}/{len(real)} (target >= 5 of 7) "
                   f"{_met(right >= 5 * len(real) / 7)}, within +-1 {near}/{len(real)} (target all) "
                   f"{_met(near == len(real))}, DER c0.5 {d:.1%} (target <= 15%) {_met(d <= 0.15)}")
    words = [r for r in records if "words" in r]
    if words:
        ours = sum(r["words"]["ours"]["deletions"] for r in words)
        plain = sum(r["words"]["plain"]["deletions"] for r in words)
        ref = sum(r["words"]["ours"]["ref_words"] for r in words)
        out.append(f"missed speech: deleted words ours {ours} <= plain {plain} + 1% of {ref} = "
                   f"{plain + 0.01 * ref:.1f} {_met(ours <= plain + 0.01 * ref)}")
    return out


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def summary(records: list[dict], hints: bool = False) -> str:
    parts = []
    if any("diar" in r for r in records):
        parts.append("Diarization (diarizer called directly):\n\n" + diarization_table(records))
        if any(r["half"] in ("tune", "check") for r in records if "diar" in r):
            parts.append("Speaker count right per true count (conversations):\n\n" + count_table(records))
        if any(r["group"] == "real" for r in records if "diar" in r):
            parts.append("Real recordings (the verdict):\n\n" + real_table(records))
    if any("words" in r for r in records):
        parts.append("Words (full pipeline vs plain faster-whisper, same files):\n\n" + words_table(records))
    goals = targets(records, hints)
    if goals:
        parts.append("Targets (issue 18; on the files of this run only):\n\n" + "\n".join(f"- {g}" for g in goals))
    return "\n\n".join(parts) if parts else "(nothing measured)"


if __name__ == "__main__":  # python -m local_dev.eval.report OUT.json: the tables of a saved run again
    saved = json.loads(Path(sys.argv[1]).read_text())
    print(summary(saved["files"], saved.get("hints", False)))
