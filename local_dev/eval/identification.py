"""`make eval`'s named speakers: enrol a voice once, then does a transcript name it (and nobody else)?

    python -m local_dev.eval.identification [--thresholds 0.6,0.65,...] [--no-live]
    (also in `make eval`: python -m local_dev.eval --sets ident)

The set is local_dev/eval/identification_sets.py: voices enrolled from one utterance (EmbeddedDiarizer
.voiceprint, as the enrolment endpoint embeds), conversations of enrolled and never-enrolled speakers, clean
and through one shared channel, tune and check halves of disjoint speakers; and the real recordings,
enrolled from their first part and tested on the rest. Each test file is diarized (the embedded diarizer,
no hints), then shared/pipeline/identify.py names its speakers with the voiceprints stage's embedding and
re-diarizes when a known voice is left over, as a transcription does. Diarization, voiceprints and
re-diarizations are computed once per file and replayed for every threshold.

Scored on a 10 ms grid over the reference speech where exactly one speaker talks (overlap left out),
time-weighted:
- precision: of the speech a transcript names after an enrolled voice, the share that voice's speaker says;
- recall: of enrolled speakers' speech, the share carrying their name;
- unknown named: of never-enrolled speakers' speech, the share carrying some enrolled name;
- DER (collar 0.5, overlap scored) of the identified turns against the diarizer's own (re-diarization
  may change it); the same person across conversations: enrolled speakers named (most of their speech
  under their name) in every conversation they talk in.
VOICE_MATCH_THRESHOLD: the threshold with the highest tune recall among those meeting precision >= 97 %
and unknown named <= 3 % on the tune half; reported on the check half and the real recordings.
Enrolment checks: single-speaker utterances refused as two voices (count_voices), two-speaker 8 s samples
detected, LibriSpeech utterances under VOICE_MIN_SPEECH_S of speech. Live (shared/live: one embedding per
utterance, embed_voice): per final utterance of an enrolled speaker, named right, and after how many
seconds of that speaker's speech a conversation first names it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from local_dev.eval import identification_sets as iset
from local_dev.eval import scoring as sc
from local_dev.eval import sets
from shared.core.config import Settings
from shared.core.domain import SpeakerHints
from shared.pipeline.identify import KnownVoice, identify

FRAME_S = 0.01
THRESHOLDS = tuple(round(0.5 + 0.025 * i, 3) for i in range(17))  # 0.5 ... 0.9
TARGETS = {"precision": 0.97, "recall": 0.85, "unknown_named": 0.03}
KEYS = ("named_s", "named_right_s", "enrolled_s", "enrolled_named_s", "unknown_s", "unknown_named_s")


# ------------------------------------------------------------------------------------------ scoring


def frame_counts(ref, hyp, known: set[str], frame_s: float = FRAME_S) -> tuple[dict, dict]:
    """Seconds (see KEYS) over the frames where exactly one reference speaker talks, and {reference
    speaker: the hypothesis label over most of its single-speaker frames}. `ref`, `hyp`: (start, end,
    speaker) turns; a hyp label in `known` is a name."""
    end = max([b for _, b, _ in ref] + [b for _, b, _ in hyp] + [0.0])
    n = int(np.ceil(end / frame_s)) + 1
    speakers = sorted({s for _, _, s in ref})
    active = np.zeros((len(speakers), n), bool)
    for a, b, s in ref:
        active[speakers.index(s), int(round(a / frame_s)) : int(round(b / frame_s))] = True
    labels = sorted({s for _, _, s in hyp})
    said = np.full(n, -1)
    for a, b, s in sorted(hyp):
        said[int(round(a / frame_s)) : int(round(b / frame_s))] = labels.index(s)
    single = active.sum(0) == 1
    who = np.where(single, active.argmax(0), -1)
    is_name = np.array([label in known for label in labels] + [False])  # index -1: silence
    named = is_name[said]
    same = np.array([[ref_s == hyp_s for hyp_s in labels] + [False] for ref_s in speakers])
    right = np.zeros(n, bool)
    right[single] = same[who[single], said[single]]
    enrolled = single & np.isin(who, [i for i, s in enumerate(speakers) if s in known])
    unknown = single & ~enrolled
    counts = {"named_s": (single & named).sum(), "named_right_s": (single & named & right).sum(),
              "enrolled_s": enrolled.sum(), "enrolled_named_s": (enrolled & right).sum(),
              "unknown_s": unknown.sum(), "unknown_named_s": (unknown & named).sum()}
    major = {}
    for i, s in enumerate(speakers):
        mine = said[single & (who == i)]
        votes = np.bincount(mine[mine >= 0], minlength=len(labels))
        major[s] = labels[int(votes.argmax())] if len(labels) and votes.max() > len(mine) / 2 else None
    return {k: float(v) * frame_s for k, v in counts.items()}, major


def rates(c: dict) -> dict:
    def share(a, b):
        return c[a] / c[b] if c[b] else float("nan")

    return {"precision": share("named_right_s", "named_s"), "recall": share("enrolled_named_s", "enrolled_s"),
            "unknown_named": share("unknown_named_s", "unknown_s")}


def add(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {k: 0.0 for k in KEYS}


def consistency(results: list[dict]) -> tuple[int, int]:
    """(enrolled speakers named in every conversation they talk in, enrolled speakers in two or more)."""
    seen: dict[str, list[bool]] = {}
    for r in results:
        for s, label in r["major"].items():
            if s in r["known"]:
                seen.setdefault(s, []).append(label == s)
    many = [v for v in seen.values() if len(v) >= 2]
    return sum(all(v) for v in many), len(many)


def choose(table: dict[float, dict]) -> float:
    """The threshold with the best recall among those meeting the precision and unknown targets, else
    the one with the best precision."""
    ok = [t for t, r in table.items() if r["precision"] >= TARGETS["precision"]
          and r["unknown_named"] <= TARGETS["unknown_named"]]
    if ok:
        return max(ok, key=lambda t: (table[t]["recall"], -t))
    return max(table, key=lambda t: (np.nan_to_num(table[t]["precision"]), t))


# ------------------------------------------------------------------------------------------ running


class Prepared:
    """One test file diarized once; voiceprints and re-diarizations memoised across thresholds."""

    def __init__(self, case: iset.Case, diarizer, known: list[KnownVoice]):
        self.case, self.diarizer, self.known = case, diarizer, known
        start = time.perf_counter()
        self.turns = diarizer.diarize(case.audio, SpeakerHints())
        self.prints: dict = {}
        self.retries: dict = {}
        self.seconds = time.perf_counter() - start

    def voiceprints(self, groups):
        out = []
        for spans in groups:
            key = tuple(spans)
            if key not in self.prints:
                self.prints[key] = self.diarizer.voiceprint(self.case.audio, spans)
            out.append(self.prints[key])
        return out

    def rediarize(self, hints: SpeakerHints):
        key = hints.min_speakers
        if key not in self.retries:
            self.retries[key] = self.diarizer.diarize(self.case.audio, hints)
        return self.retries[key]

    def score(self, threshold: float, retry: bool = True) -> dict:
        turns, _ids = identify(self.turns, self.known, threshold, voiceprints=self.voiceprints,
                               rediarize=self.rediarize if retry else None)
        ref = self.case.turns
        hyp = [(t.start, t.end, t.speaker) for t in turns]
        counts, major = frame_counts(ref, hyp, set(self.case.known))
        ref_ann = sc.rttm_annotation("".join(f"SPEAKER f 1 {a:.3f} {b - a:.3f} <NA> <NA> {s} <NA> <NA>\n"
                                             for a, b, s in ref))
        return {"counts": counts, "major": major, "known": set(self.case.known),
                "der": sc.diarization_counts(ref_ann, sc.turns_annotation(hyp), collar=0.5),
                "der_plain": sc.diarization_counts(ref_ann, sc.turns_annotation(self.turns), collar=0.5),
                "retried": [(t.start, t.end) for t in turns] != [(t.start, t.end) for t in self.turns]}


def der(c: dict) -> float:
    return (c["confusion"] + c["missed"] + c["false_alarm"]) / c["total"] if c["total"] else 0.0


def summarize(results: list[dict]) -> dict:
    out = rates(add([r["counts"] for r in results]))
    keys = ("confusion", "missed", "false_alarm", "total")
    out["der"] = der({k: sum(r["der"][k] for r in results) for k in keys})
    out["der_plain"] = der({k: sum(r["der_plain"][k] for r in results) for k in keys})
    out["same_name"] = consistency(results)
    out["retried"] = sum(r["retried"] for r in results)
    out["files"] = len(results)
    out["enrolled_s"] = add([r["counts"] for r in results])["enrolled_s"]
    return out


def enrolment_checks(diarizer, voices, enrolments, seed: int) -> dict:
    """Single-speaker enrolment utterances refused as several voices; two-speaker 8 s samples (4 s of
    each of two speakers' speech, levelled) detected; LibriSpeech utterances under VOICE_MIN_SPEECH_S."""
    settings = Settings(_env_file=None)
    single = [diarizer.voiceprint(e.audio, e.spans, count_voices=True) for e in enrolments.values()]
    rng = np.random.default_rng([seed, iset.SALT, 99])
    names = sorted(voices)
    pairs = []
    for _ in range(40):
        a, b = (str(s) for s in rng.choice(names, 2, replace=False))
        pairs.append(np.concatenate([_speech(voices[a][0], 4.0), _speech(voices[b][0], 4.0)]))
    two = [diarizer.voiceprint(x, [(0.0, len(x) / 16000)], count_voices=True) for x in pairs]
    files = [s for v in voices.values() for s in v]
    short = sum(iset.speech_of(s.regions) < settings.voice_min_speech_s for s in files)
    return {"single_refused": (sum(p.voices > 1 for p in single), len(single)),
            "pairs_detected": (sum(p.voices >= 2 for p in two), len(two)),
            "short_utterances": (short, len(files)), "min_speech_s": settings.voice_min_speech_s,
            "enrol_speech_s": [round(p.speech_s, 1) for p in single]}


def _speech(src, seconds: float) -> np.ndarray:
    parts = [src.audio[int(a * 16000) : int(b * 16000)] for a, b in src.regions]
    return np.concatenate(parts)[: int(seconds * 16000)]


def live(cases, diarizer, known_vectors: dict[str, np.ndarray], threshold: float) -> dict:
    """Per final utterance (the live endpointer's cut) of an enrolled speaker (one reference speaker over
    80 % of its speech): named right / named wrong; unknown speakers' utterances named; and the seconds of
    an enrolled speaker's speech before a conversation first names it right (median)."""
    from local_dev.eval.live_turns import live_cut

    settings = Settings(_env_file=None, device="cpu")
    c = {"enrolled": 0, "right": 0, "wrong": 0, "unknown": 0, "unknown_named": 0}
    delays, never = [], 0
    for case in cases:
        known = {s: known_vectors[s] for s in case.known}
        names, mat = list(known), np.stack(list(known.values()))
        heard: dict[str, float] = {}
        first: dict[str, float] = {}
        for a, b in live_cut(case.audio, settings):
            lo, hi = a / 16000, b / 16000
            share = {}
            for x, y, s in case.turns:
                share[s] = share.get(s, 0.0) + max(0.0, min(y, hi) - max(x, lo))
            total = sum(share.values())
            if total <= 0:
                continue
            s = max(share, key=share.get)
            if share[s] < 0.8 * total:
                continue
            scores = mat @ diarizer.embed_voice(case.audio[a:b])
            j = int(scores.argmax())
            name = names[j] if scores[j] >= threshold else None
            if s in known:
                c["enrolled"] += 1
                c["right"] += name == s
                c["wrong"] += name is not None and name != s
                heard[s] = heard.get(s, 0.0) + share[s]
                if name == s and s not in first:
                    first[s] = heard[s]
            else:
                c["unknown"] += 1
                c["unknown_named"] += name is not None
        delays += list(first.values())
        never += sum(s not in first for s in heard)
    return dict(c, median_delay_s=float(np.median(delays)) if delays else float("nan"), never=never,
                speakers=len(delays) + never)


# ------------------------------------------------------------------------------------------ report


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"


def row(label: str, s: dict) -> str:
    same_right, same_n = s["same_name"]
    return (f"| {label} | {s['files']} | {s['enrolled_s'] / 60:.1f} | {_pct(s['precision'])} | {_pct(s['recall'])} "
            f"| {_pct(s['unknown_named'])} | {s['der_plain']:.1%} | {s['der']:.1%} | {s['retried']} "
            f"| {same_right}/{same_n} |")


HEADER = ("| set | files | enrolled speech (min) | precision | recall | unknown named | DER diarizer | DER identified "
          "| re-diarized | same name everywhere |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def run(settings: Settings | None = None, *, thresholds=THRESHOLDS, half: str = "all", with_live: bool = True,
        seed: int = sets.SEED, out=sys.stdout) -> dict:
    """Everything above; prints progress and the markdown tables to `out`; returns the figures."""
    from shared.pipeline.diarization.embedded import EmbeddedDiarizer

    settings = settings or Settings(_env_file=None, device="cpu")
    started = time.perf_counter()
    diarizer = EmbeddedDiarizer.from_settings(settings)
    voices = sets.load_voices(sets._Lazy(sets._silero))
    enrolments, cases = iset.synthetic(voices, seed, log=lambda m: print(m, file=out))
    raw = {s: e for s, e in enrolments.items() if "@" not in s}
    real_enrolments, real_cases = iset.real(log=lambda m: print(m, file=out))
    enrolled = {**enrolments, **real_enrolments}
    prints = {s: diarizer.voiceprint(e.audio, e.spans) for s, e in enrolled.items()}
    vectors = {s: p.vector for s, p in prints.items()}
    prepared: list[Prepared] = []
    for case in cases + real_cases:
        p = Prepared(case, diarizer, [KnownVoice(s, s, vectors[s + case.enrol_suffix]) for s in case.known])
        prepared.append(p)
        print(f"{case.name:32} {case.group:11} {case.half:5} {case.duration:5.1f}s  speakers "
              f"{len({t.speaker for t in p.turns})}/{len({t[2] for t in case.turns})}  known {len(case.known)}  "
              f"{p.seconds:.1f}s", file=out, flush=True)

    def group(h, g=None, threshold=0.75, retry=True):
        chosen = [p for p in prepared if p.case.half == h and (g is None or p.case.group == g)]
        return summarize([p.score(threshold, retry) for p in chosen])

    sweep = {t: group("tune", threshold=t) for t in thresholds}
    best = choose(sweep)
    per = {(t, g): group("tune", g, t) for t in thresholds for g in ("ident-clean", "ident-same")}
    lines = [f"### Threshold sweep (tune half, {sweep[best]['files']} files; precision / recall / unknown named)\n",
             "| threshold | clean + same | clean | same | DER identified |", "|---:|---:|---:|---:|---:|"]

    def pru(r):
        return f"{_pct(r['precision'])} / {_pct(r['recall'])} / {_pct(r['unknown_named'])}"

    lines += [f"| {t:g}{' (chosen)' if t == best else ''} | {pru(r)} | {pru(per[t, 'ident-clean'])} "
              f"| {pru(per[t, 'ident-same'])} | {r['der']:.1%} |" for t, r in sweep.items()]
    figures = {"threshold": best, "sweep": {str(t): {k: v for k, v in r.items()} for t, r in sweep.items()}}
    lines += [f"\n### At VOICE_MATCH_THRESHOLD {best:g}\n", HEADER]
    for h in ("tune", "check") if half == "all" else (half,):
        for g in ("ident-clean", "ident-same"):
            s = group(h, g, best)
            figures[f"{h}/{g}"] = s
            lines.append(row(f"{h} / {g}", s))
        s = group(h, None, best)
        figures[f"{h}/all"] = s
        lines.append(row(f"**{h}, all**", s))
    s = group("dev", "ident-real", best)
    figures["real"] = s
    lines.append(row("ident-real (dev)", s))
    for label, h in (("check", "check"), ("real", "dev")):
        s = group(h, None, best, retry=False)
        figures[f"{label}/no-retry"] = s
        lines.append(row(f"{label}, no re-diarization", s))
    checks = enrolment_checks(diarizer, voices, raw, seed)
    figures["enrolment"] = checks
    (r, n), (d, m), (u, k) = checks["single_refused"], checks["pairs_detected"], checks["short_utterances"]
    lines.append(f"\nEnrolment checks (count_voices): single-speaker utterances refused as two voices {r}/{n}; "
                 f"two-speaker 8 s samples detected {d}/{m}; LibriSpeech utterances under "
                 f"{checks['min_speech_s']:g} s of speech {u}/{k}.")
    if with_live:
        for h in ("tune", "check"):
            lv = live([c for c in cases if c.half == h and c.group == "ident-clean"], diarizer, vectors, best)
            figures[f"live/{h}"] = lv
            lines.append(f"Live ({h} half, ident-clean, threshold {best:g}, per final utterance): enrolled speakers' "
                         f"utterances named right {lv['right']}/{lv['enrolled']}, named wrong {lv['wrong']}; "
                         f"unknown speakers' utterances named {lv['unknown_named']}/{lv['unknown']}; first named "
                         f"after a median {lv['median_delay_s']:.1f} s of their speech, never in "
                         f"{lv['never']}/{lv['speakers']} conversation-speakers.")
    lines.append(f"\n({len(prepared)} files, {time.perf_counter() - started:.0f} s)")
    print("\n## Named speakers (identification)\n\n" + "\n".join(lines), file=out, flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thresholds", default=",".join(f"{t:g}" for t in THRESHOLDS))
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args(argv)
    run(thresholds=tuple(float(t) for t in args.thresholds.split(",")), with_live=not args.no_live)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
