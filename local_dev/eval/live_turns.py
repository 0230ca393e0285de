"""`make eval-live`: live speakers on conversations whose speakers hand over quickly, against the
offline diarizer on the same audio in the same run; and the choice of STREAM_TURN_THRESHOLD (speaker
changes inside an open utterance, shared/live/turns.py) with STREAM_SPEAKER_THRESHOLD: swept on the tune
half, reported on the check half and on the real recordings.

Files: the conversations (`conv-clean`, and `same-clean`, one room and microphone) whose median gap at
a change of speaker is under 0.6 s, the one-speaker ones (a false cut shows there), and all seven real
recordings (half "dev": never tuned on). A live session is replayed in-process as the server runs it:
audio fed 0.5 s at a time to the endpointer; after each feed the open utterance's encoder windows (a grid
fixed in the stream, computed once per file) go to the turn detector, and a change found cuts the
utterance there; each utterance's voice (embed_voice) then goes to the speaker tracker. The encoder's
work is the server's; only the wall-clock delay of a model call is left out. Scored as `make eval`:
DER (collar 0.5, overlap skipped) of utterance-level turns, the speaker count, and multi-speaker files
that came out with one speaker.

    python -m local_dev.eval.live_turns [--limit N] [--turns 0,0.3,...] [--speakers 0.15,0.2,...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np

from local_dev.eval import sets
from local_dev.eval.scoring import der
from shared.core.config import Settings
from shared.core.domain import SAMPLE_RATE, SpeakerHints
from shared.live.endpoint import Endpointer
from shared.live.speakers import SpeakerTracker
from shared.live.turns import HOP, SPAN, TurnDetector, find_cut, grid_start
from shared.media.decode import decode
from shared.pipeline.diarization.embedded import EmbeddedDiarizer

FEED = 8000  # samples a feed (0.5 s), as a live client sends them
WIN = SPAN * HOP
QUICK_GAP_S = 0.6


def handover_gap(rttm: str) -> float | None:
    """The median gap (negative: overlap) between one speaker's turn and the next speaker's."""
    turns = sorted((float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in (line.split() for line in rttm.splitlines()) if f)
    gaps = [b[0] - a[1] for a, b in zip(turns, turns[1:]) if a[2] != b[2]]
    return float(np.median(gaps)) if gaps else None


def chosen_items(limit: int = 0) -> list[sets.Item]:
    out, taken = [], {}
    for item in sets.load_items():
        if item.group not in ("conv-clean", "same-clean", "real"):
            continue
        gap = handover_gap(item.rttm)
        if item.group != "real" and gap is not None and gap >= QUICK_GAP_S:
            continue
        key = (item.group, item.half)
        if limit and taken.get(key, 0) >= limit:
            continue
        taken[key] = taken.get(key, 0) + 1
        out.append(item)
    return out


def live_cut(audio: np.ndarray, settings, detector: TurnDetector | None = None,
             windows: np.ndarray | None = None) -> list[tuple[int, int]]:
    """A live session's utterances (sample spans) over `audio` fed 0.5 s at a time: cut by its endpointer
    and, with a `detector` and the file's grid `windows` (window k from sample k HOP), at speaker changes."""
    ep = Endpointer(threshold=settings.stream_vad_threshold, neg_threshold=settings.stream_vad_neg_threshold,
                    silence_ms=settings.stream_silence_ms, max_utterance_s=settings.stream_max_utterance_s)
    bounds, start = [], None

    def vectors(received: int) -> tuple[int, np.ndarray]:
        first = grid_start(start) // HOP
        return first * HOP, windows[first : max(first, min((received - WIN) // HOP + 1, len(windows)))]

    def take(boundaries, received: int) -> None:
        nonlocal start
        for b in boundaries:
            if b.kind == "start":
                start = b.sample
                continue
            if detector is not None:  # as LiveSession._end_utterance: a last look, nothing follows
                cut = find_cut(detector, ep, *vectors(received), settled=True, until=b.sample)
                if cut is not None and start < cut < b.sample:
                    bounds.append((start, cut))
                    start = cut
            bounds.append((start, b.sample))

    for at in range(0, len(audio), FEED):
        received = min(at + FEED, len(audio))
        take(ep.feed(audio[at:received]), received)
        if detector is not None and ep.is_open:  # as LiveSession._windows_done
            cut = find_cut(detector, ep, *vectors(received))
            if cut is not None:
                take(ep.split(cut), received)
    take(ep.close(len(audio)), len(audio))
    return [(a, b) for a, b in bounds if b > a]


class Conversation:
    """One file, with what every replay of it reuses: its audio, its grid windows, utterance voices."""

    def __init__(self, item: sets.Item, encoder: EmbeddedDiarizer):
        self.item, self.encoder = item, encoder
        self.audio = decode(item.audio).samples
        cache = sets.OUT_DIR / "live_windows" / f"{item.name}.npy"
        cache.parent.mkdir(parents=True, exist_ok=True)
        if not cache.exists():
            np.save(cache, encoder.embed_windows(self.audio))
        self.windows = np.load(cache)  # window k covers samples [k HOP, k HOP + WIN)
        self._voices: dict[tuple[int, int], np.ndarray] = {}
        self._cuts: dict[tuple, list[tuple[int, int]]] = {}

    def voice(self, a: int, b: int) -> np.ndarray:
        if (a, b) not in self._voices:
            self._voices[a, b] = self.encoder.embed_voice(self.audio[a:b])
        return self._voices[a, b]

    def utterances(self, settings, p: "Params") -> list[tuple[int, int]]:
        """The live session's utterances: cut by its endpointer, and at speaker changes (turn 0: none)."""
        key = (p.turn, p.side, p.min_side)
        if key not in self._cuts:
            detector = TurnDetector(p.turn, side_windows=p.side, min_side_windows=p.min_side) if p.turn else None
            self._cuts[key] = live_cut(self.audio, settings, detector, self.windows)
        return self._cuts[key]

    def live_rttm(self, settings, p: "Params", settled: bool = True) -> str:
        """Utterance-level turns, labelled as the session labels finals and, `settled`, as a client
        shows them once it has applied every speaker correction (SpeakerUpdate)."""
        tracker = SpeakerTracker(p.speaker, SpeakerHints(), eager=0.5, recluster=p.recluster, fold_s=p.fold_s,
                                 distinct=p.distinct)
        rows: dict[int, list] = {}
        for item, (a, b) in enumerate(self.utterances(settings, p)):
            if not np.any(self.voice(a, b)):
                continue  # under 0.3 s of audio: no voice, and the session gives it no speaker either
            speaker, _new = tracker.assign(self.voice(a, b), (b - a) / SAMPLE_RATE, item)
            rows[item] = [a, b, speaker]
            for move in tracker.settle() if settled else ():
                for moved in move.items:
                    rows[moved][2] = move.speaker
        return "".join(f"SPEAKER file 1 {a / SAMPLE_RATE:.3f} {(b - a) / SAMPLE_RATE:.3f} <NA> <NA> {s} <NA> <NA>\n"
                       for a, b, s in rows.values())

    def offline_rttm(self) -> str:
        turns = self.encoder.diarize(self.audio)
        return "".join(f"SPEAKER file 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
                       for t in turns)


def speakers_in(rttm: str) -> int:
    return len({line.split()[7] for line in rttm.splitlines() if line.strip()})


@dataclass(frozen=True)
class Params:
    turn: float  # STREAM_TURN_THRESHOLD (0: no cuts at speaker changes)
    speaker: float  # STREAM_SPEAKER_THRESHOLD
    recluster: float = 0.0  # STREAM_SPEAKER_RECLUSTER (0: labels never settle)
    side: int = 12  # TurnDetector's side_windows ...
    min_side: int = 2  # ... and min_side_windows
    fold_s: float = 3.0  # SpeakerTracker's fold_s ...
    distinct: float = 0.28  # ... and distinct

    def __str__(self) -> str:
        return (f"{self.turn:g} | {self.side} | {self.min_side} | {self.speaker:g} | {self.recluster:g} | "
                f"{self.fold_s:g} | {self.distinct:g}")


def score(convs: list[Conversation], settings, p: Params, settled: bool = True) -> dict:
    ders, right, single = [], 0, 0
    for c in convs:
        rttm = c.live_rttm(settings, p, settled)
        ders.append(der(c.item.rttm, rttm))
        n = speakers_in(rttm)
        right += n == c.item.num_speakers
        single += c.item.num_speakers > 1 and n <= 1
    return {"der": statistics.mean(ders) if ders else 0.0, "right": right, "single": single, "files": len(convs)}


def ratio(live: float, offline: float) -> str:
    return f"{live / offline:.2f}" if offline >= 0.005 else "-"


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=0, help="files per group and half (0: all)")
    parser.add_argument("--turns", default="0,0.2,0.25,0.3", help="turn thresholds (0: no turn cuts)")
    parser.add_argument("--sides", default="6,8,12", help="the turn detector's windows a side, at most")
    parser.add_argument("--min-sides", default="2,3", help="the turn detector's windows a side, at least")
    parser.add_argument("--speakers", default="0.15,0.2,0.25", help="speaker thresholds, swept on the chosen cuts")
    parser.add_argument("--reclusters", default="0,0.15,0.2,0.25",
                        help="re-clustering thresholds (0: labels never settle), swept with them")
    parser.add_argument("--folds", default="3", help="re-clustered speakers heard less than this (s) are folded ...")
    parser.add_argument("--distincts", default="0.28", help="... unless this far from every other")
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None, device="cpu")
    encoder = EmbeddedDiarizer.from_settings(settings)
    t0 = time.monotonic()
    convs = [Conversation(i, encoder) for i in chosen_items(args.limit)]
    groups: dict[str, list[Conversation]] = {}
    for c in convs:
        groups.setdefault(c.item.half, []).append(c)
    print(f"{len(convs)} files ({', '.join(f'{k} {len(v)}' for k, v in groups.items())}), "
          f"windows in {time.monotonic() - t0:.0f} s", flush=True)
    tune = groups.get("tune", [])

    # 1. where utterances are cut (labels settled at the default thresholds), then 2. how speakers are told apart
    print("\n| turn threshold | side windows | min side | speaker threshold | recluster | fold under (s) | distinct "
          "| tune DER | count right | one speaker of many |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tuned: dict[Params, dict] = {}

    def row(p: Params) -> None:
        r = tuned[p] = score(tune, settings, p)
        print(f"| {p} | {r['der']:.1%} | {r['right']}/{r['files']} | {r['single']} |", flush=True)

    # the lowest DER among the settings that never leave a multi-speaker file with one speaker, if any do
    def best(candidates) -> Params:
        safe = [p for p in candidates if tuned[p]["single"] == 0] or list(candidates)
        return min(safe, key=lambda p: tuned[p]["der"])

    speaker0, recluster0 = settings.stream_speaker_threshold, settings.stream_speaker_recluster
    for t in floats(args.turns):
        for side in (int(v) for v in args.sides.split(",")):
            for m in (int(v) for v in args.min_sides.split(",")):
                if t or (side, m) == (12, 2):
                    row(Params(t, speaker0, recluster0, side, m))
    cut = best(list(tuned))
    no_turns = Params(0, speaker0, recluster0)
    for s in floats(args.speakers):
        for r in floats(args.reclusters):
            for f in floats(args.folds):
                for d in floats(args.distincts):
                    p = Params(cut.turn, s, r, cut.side, cut.min_side, f, d)
                    if p not in tuned:
                        row(p)
    chosen = best(list(tuned))
    print(f"\nchosen on the tune half: STREAM_TURN_THRESHOLD {chosen.turn:g} ({chosen.side} windows a side, at "
          f"least {chosen.min_side}), STREAM_SPEAKER_THRESHOLD {chosen.speaker:g}, STREAM_SPEAKER_RECLUSTER "
          f"{chosen.recluster:g} (folding speakers under {chosen.fold_s:g} s unless {chosen.distinct:g} from all)")
    print("\n| half | group | files | offline DER | live DER | live / offline | live, as first said | "
          "live, no turn cuts | count right | one speaker of many |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for half in ("check", "dev"):
        for group in sorted({c.item.group for c in groups.get(half, [])}):
            part = [c for c in groups[half] if c.item.group == group]
            offline = statistics.mean(der(c.item.rttm, c.offline_rttm()) for c in part)
            live = score(part, settings, chosen)
            said = score(part, settings, chosen, settled=False)
            plain = score(part, settings, no_turns)
            print(f"| {half} | {group} | {len(part)} | {offline:.1%} | {live['der']:.1%} | "
                  f"{ratio(live['der'], offline)} | {said['der']:.1%} | {plain['der']:.1%} | "
                  f"{live['right']}/{len(part)} | {live['single']} |", flush=True)
    print(f"\n{time.monotonic() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
