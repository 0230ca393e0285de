"""The long-form benchmark's pure helpers: placement plans, sizes, RSS summation, mp3 streaming, the table.
Nothing here reads ../shared/data or starts a server."""

from __future__ import annotations

import os
import wave
from collections import Counter

import numpy as np
import pytest

from local_dev.bench.long_form_audio import (
    GAIN_DB_RANGE,
    GAP_RANGE,
    SPEAKERS_RANGE,
    Clip,
    Mp3Writer,
    load_clip,
    parse_size,
    plan_recording,
    render,
    size_label,
)
from local_dev.bench.long_form_report import markdown_table, summary
from local_dev.bench.server_process import group_cpu_s, group_rss


def fake_clips() -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    for s in range(40):  # one utterance each, like train-clean-100
        clips.append(Clip(f"tc/{s}-0.flac", f"ls{s}", float(rng.uniform(10, 35))))
    for s in range(100, 104):  # ten each, like test-other
        clips += [Clip(f"to/{s}-{u}.flac", f"ls{s}", float(rng.uniform(3, 20))) for u in range(10)]
    clips += [Clip(f"lv/{u}.wav", "librivox_reader", 6.0, "known") for u in range(5)]
    clips.append(Clip("jfk/jfk.wav", "jfk", 11.0, "known"))
    return clips


def plan_seconds(clips, plan) -> float:
    duration = {c.key: c.seconds for c in clips}
    return sum(p.gap + duration[p.key] for p in plan)


@pytest.mark.parametrize("seconds", [60.0, 900.0, 4 * 3600.0])
def test_plan_is_deterministic_and_fills_the_duration(seconds):
    clips = fake_clips()
    plan = plan_recording(clips, seconds, seed=7)
    assert plan == plan_recording(clips, seconds, seed=7)
    assert plan != plan_recording(clips, seconds, seed=8)
    total = plan_seconds(clips, plan)
    assert seconds <= total < seconds + max(c.seconds for c in clips) + GAP_RANGE[1]
    assert all(GAP_RANGE[0] <= p.gap <= GAP_RANGE[1] for p in plan[1:])
    assert all(GAIN_DB_RANGE[0] <= p.gain_db <= GAIN_DB_RANGE[1] for p in plan)


def test_plan_conversations_take_turns_without_repeats():
    clips = fake_clips()
    kind = {c.key: c.kind for c in clips}
    plan = plan_recording(clips, 4 * 3600.0, seed=1)
    by_conversation: dict[int, list] = {}
    for p in plan:
        by_conversation.setdefault(p.conversation, []).append(p)
    last = max(by_conversation)
    for number, turns in by_conversation.items():
        voices = [p for p in turns if kind[p.key] == "voice"]
        cast = {p.speaker for p in voices}
        assert len(cast) <= SPEAKERS_RANGE[1] and (number == last or len(cast) >= SPEAKERS_RANGE[0])
        assert len({p.key for p in voices}) == len(voices)  # no clip twice in one conversation
        assert all(a.speaker != b.speaker for a, b in zip(turns, turns[1:]) if kind[a.key] == kind[b.key] == "voice")
    assert any(kind[p.key] == "known" for p in plan)  # sprinkled in
    # least used first: a long plan cycles through every clip, evenly
    uses = Counter(p.key for p in plan if kind[p.key] == "voice")
    assert len(uses) == sum(k == "voice" for k in kind.values())


def test_short_plan_repeats_nothing():
    clips = fake_clips()
    plan = plan_recording(clips, 600.0, seed=3)
    assert len({p.key for p in plan}) == len(plan)


def test_sizes():
    assert [parse_size(s) for s in ("15m", "1h", "4h", "2m", "90s", "1h30m", "45")] == [
        900, 3600, 14400, 120, 90, 5400, 45]
    assert [size_label(s) for s in (900, 3600, 14400, 5400, 90)] == ["15m", "1h", "4h", "1h30m", "1m30s"]
    for bad in ("", "abc", "15x", "0m", "m"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_group_rss_sums_one_process_group(tmp_path):
    def proc(pid, comm, pgid, rss_kb):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} ({comm}) S 1 {pgid} {pgid} 0 -1 4194560 0 0\n")
        status = f"Name:\t{comm}\nState:\tS\n" + (f"VmRSS:\t{rss_kb} kB\n" if rss_kb is not None else "")
        (d / "status").write_text(status)

    proc(100, "python", 100, 1000)
    proc(101, "odd) name (x", 100, 2000)  # ')' in the command name
    proc(102, "python", 200, 4000)  # another group
    proc(103, "zombie", 100, None)  # no VmRSS
    (tmp_path / "104").mkdir()  # gone between listdir and read
    (tmp_path / "self").mkdir()
    assert group_rss(100, tmp_path) == (3000 * 1024, 3)
    assert group_rss(200, tmp_path) == (4000 * 1024, 1)
    assert group_rss(300, tmp_path) == (0, 0)


def test_mp3_is_written_piece_by_piece_and_render_places_clips(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    for name, seconds in (("a", 1.0), ("b", 0.5)):
        x = (0.3 * np.sin(2 * np.pi * 440 * t[: int(seconds * sr)]) * 32767).astype(np.int16)
        with wave.open(str(tmp_path / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes(x.tobytes())
    clips = [Clip("a.wav", "A", 1.0), Clip("b.wav", "B", 0.5)]
    plan = plan_recording(clips, 2.0, seed=0)
    mp3 = tmp_path / "out.mp3"
    out = render(plan, tmp_path, mp3, seed=0)
    rows = out["placements"]
    assert [r["key"] for r in rows] == [p.key for p in plan]
    assert rows[0]["start"] == pytest.approx(plan[0].gap)
    for a, b, p in zip(rows, rows[1:], plan[1:]):
        assert b["start"] == pytest.approx(a["end"] + p.gap, abs=1e-3)
    decoded = load_clip(mp3)
    assert abs(len(decoded) / sr - out["duration"]) < 0.1
    assert not mp3.with_name("out.mp3.part").exists()

    writer = Mp3Writer(tmp_path / "pieces.mp3")
    for _ in range(3):
        writer.write(np.zeros(4000, np.float32))
    writer.close()
    assert writer.samples == 12000


def test_table_and_summary_carry_failed_rows():
    rows = [
        {"size": "15m", "status": "succeeded", "audio_s": 900.0, "wall_s": 90.0, "rtf": 0.1, "peak_rss_mb": 2000.0,
         "peak_over_idle_mb": 800.0, "words": 90, "ref_words": 100, "word_share": 0.9, "wer": 0.1,
         "speakers_found": 5, "speakers_placed": 6, "progress_updates": 7, "progress_ok": True},
        {"size": "1h", "status": "failed (internal_error: KeyError: 4887)", "audio_s": 3600.0, "wall_s": 30.0,
         "rtf": 0.008, "peak_rss_mb": 2500.0, "peak_over_idle_mb": 1300.0, "ref_words": 400,
         "speakers_placed": 20, "progress_updates": 1, "progress_ok": False},
        {"size": "4h", "status": "succeeded", "audio_s": 14400.0, "wall_s": 1584.0, "rtf": 0.11,
         "peak_rss_mb": 2100.0, "peak_over_idle_mb": 900.0, "words": 1800, "ref_words": 2000, "word_share": 0.9,
         "wer": 0.12, "speakers_found": 30, "speakers_placed": 60, "progress_updates": 50, "progress_ok": True},
    ]
    table = markdown_table(rows)
    assert table.count("\n") == 4 and "KeyError: 4887" in table and "- / 400" in table
    s = summary(rows)
    assert s["rtf_ratio_label"] == "RTF(4h)/RTF(15m)" and s["rtf_ratio"] == pytest.approx(1.1)
    assert s["peak_over_idle_mb"] == 1300.0 and s["peak_over_idle_includes_unfinished"]
    assert summary(rows[1:2])["rtf_ratio"] is None


def test_group_cpu_seconds_sum_user_and_system_time_of_one_group(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")

    def proc(pid, comm, pgid, utime, stime):
        d = tmp_path / str(pid)
        d.mkdir()
        # after "pid (comm) ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
        (d / "stat").write_text(f"{pid} ({comm}) S 1 {pgid} {pgid} 0 -1 4194560 0 0 0 0 {utime} {stime} 0 0\n")

    proc(100, "python", 100, 3 * tick, tick)
    proc(101, "odd) name (x", 100, 2 * tick, 0)
    proc(102, "python", 200, 50 * tick, 0)  # another group
    (tmp_path / "103").mkdir()  # gone between listdir and read
    assert group_cpu_s(100, tmp_path) == 6.0
