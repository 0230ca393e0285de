"""`make eval`'s tables (local_dev/eval/report.py) on made-up records: conv-*, same-* and real reported
apart, per half, and the real recordings one by one with their total."""

from __future__ import annotations

from local_dev.eval import report


def record(name, group, half, speakers, found, errors=1.0, total=10.0):
    counts = {"confusion": errors, "missed": 0.0, "false_alarm": 0.0, "total": total}
    return {"name": name, "group": group, "half": half, "duration": 60.0, "speakers": speakers,
            "diar": {"found": found, "der05": counts, "der0": counts, "der05_noovl": counts, "jer": 0.1,
                     "speech_s": total, "missed_s": 0.0, "rtf": 0.02}}


RECORDS = [
    record("conv00", "conv-clean", "tune", 2, 2), record("conv01", "conv-clean", "check", 3, 3),
    record("conv01-noise", "conv-noise", "check", 3, 2),
    record("same00", "same-clean", "tune", 2, 1), record("same01", "same-clean", "check", 3, 2),
    record("same02-phone", "same-phone", "check", 4, 4),
    record("ami_a", "real", "dev", 3, 1, errors=3.0), record("ami_b", "real", "dev", 2, 2, errors=1.0),
]


def test_groups_are_apart_per_half():
    labels = [label for label, _ in report._rows(RECORDS)]
    for label in ("tune / conv-clean", "check / conv-clean", "check / conv-noise", "**check, conv all**",
                  "tune / same-clean", "check / same-clean", "check / same-phone", "**check, same all**",
                  "**tune + check, conv**", "**tune + check, same**", "real"):
        assert label in labels, label
    rows = dict(report._rows(RECORDS))
    assert {r["name"] for r in rows["**check, same all**"]} == {"same01", "same02-phone"}
    assert {r["name"] for r in rows["**check, conv all**"]} == {"conv01", "conv01-noise"}


def test_real_table_lists_each_file_and_the_total():
    table = report.real_table(RECORDS)
    assert "| ami_a | 60.0 | 1/3 | off | 30.0% |" in table
    assert "| ami_b | 60.0 | 2/2 | right | 10.0% |" in table
    assert "right 1/2 | +-1 1/2 | 20.0%" in table


def test_count_table_and_targets_per_kind():
    counts = report.count_table(RECORDS)
    assert "| same check |" in counts and "| conv check |" in counts
    same_check = next(line for line in counts.splitlines() if line.startswith("| same check"))
    assert same_check.endswith("| 1/2 | 0/2 |")  # one under-counted, none over
    goals = "\n".join(report.targets(RECORDS, hints=False))
    assert "same-channel check half, no hints: count right 1/2" in goals
    assert "real recordings (2): count right 1/2" in goals
    summary = report.summary(RECORDS)
    assert "Real recordings (the verdict)" in summary
