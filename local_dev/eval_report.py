"""`make eval`'s summary: per-file measurements (local_dev/eval.py) added up per half and group, as
markdown tables to paste into the README. Error rates are totals (errors over all files / reference
over all files), not means of per-file rates; JER is the mean over files."""

from __future__ import annotations

GROUP_ORDER = ["conv-clean", "conv-noise", "conv-reverb", "conv-phone", "real",
               "words-clean", "words-quiet", "words-noisy", "words-reverb", "words-mixed"]


def der(c: dict) -> float:
    return (c["confusion"] + c["missed"] + c["false_alarm"]) / c["total"] if c["total"] else 0.0


def wer(w: dict) -> float:
    errors = w["substitutions"] + w["deletions"] + w["insertions"]
    return errors / w["ref_words"] if w["ref_words"] else float(errors > 0)


def _add(dicts: list[dict], keys) -> dict:
    return {k: sum(d[k] for d in dicts) for k in keys}


def _rows(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """(label, records) per half and group, with a total per conversation half and over both halves."""
    out = []
    for half in ("tune", "check"):
        conv = [r for r in records if r["half"] == half]
        groups = [g for g in GROUP_ORDER if any(r["group"] == g for r in conv)]
        out += [(f"{half} / {g[5:]}", [r for r in conv if r["group"] == g]) for g in groups]
        if len(groups) > 1:
            out.append((f"**{half}, all**", conv))
    conv = [r for r in records if r["half"] in ("tune", "check")]
    if {r["half"] for r in conv} == {"tune", "check"}:
        out.append(("**tune + check**", conv))
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


def count_table(records: list[dict]) -> str:
    """Per half: conversations with the speaker count right, and the mean count found, per true count."""
    conv = [r for r in records if "diar" in r and r["half"] in ("tune", "check")]
    counts = sorted({r["speakers"] for r in conv})
    lines = ["| half | " + " | ".join(f"{k} spk" for k in counts) + " |", "|---|" + "---:|" * len(counts)]
    for half in ("tune", "check"):
        cells = []
        for k in counts:
            rows = [r for r in conv if r["half"] == half and r["speakers"] == k]
            right = sum(r["diar"]["found"] == k for r in rows)
            mean = sum(r["diar"]["found"] for r in rows) / max(len(rows), 1)
            cells.append(f"{right}/{len(rows)} (found {mean:.1f})" if rows else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {half} | " + " | ".join(cells) + " |")
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
    """Issue 9's targets, where this run measured what they need."""
    out = []
    check = [r for r in records if r["half"] == "check" and "diar" in r]
    if check:
        keys = ("confusion", "missed", "false_alarm", "total")
        d = der(_add([r["diar"]["der05"] for r in check], keys))
        right = sum(r["diar"]["found"] == r["speakers"] for r in check) / len(check)
        if hints:
            out.append(f"check half, num_speakers given: DER c0.5 {d:.1%} (target <= 10%) {_met(d <= 0.10)}")
        else:
            out.append(f"check half, no hints: count right {right:.0%} (target >= 85%) {_met(right >= 0.85)}, "
                       f"DER c0.5 {d:.1%} (target <= 12%) {_met(d <= 0.12)}")
    real = [r for r in records if r["group"] == "real" and "diar" in r]
    if real and not hints:
        near = all(abs(r["diar"]["found"] - r["speakers"]) <= 1 for r in real)
        worst = max(der(r["diar"]["der05"]) for r in real)
        noovl = max(der(r["diar"]["der05_noovl"]) for r in real)
        out.append(f"real recordings: count within +-1 on every file {_met(near)}, worst DER c0.5 {worst:.1%} "
                   f"(target <= 25% each) {_met(worst <= 0.25)}; overlap skipped {noovl:.1%}")
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
    if any("words" in r for r in records):
        parts.append("Words (full pipeline vs plain faster-whisper, same files):\n\n" + words_table(records))
    goals = targets(records, hints)
    if goals:
        parts.append("Targets (issue 9; on the files of this run only):\n\n" + "\n".join(f"- {g}" for g in goals))
    return "\n\n".join(parts) if parts else "(nothing measured)"


if __name__ == "__main__":  # python -m local_dev.eval_report OUT.json: the tables of a saved run again
    import json
    import sys
    from pathlib import Path

    saved = json.loads(Path(sys.argv[1]).read_text())
    print(summary(saved["files"], saved.get("hints", False)))
