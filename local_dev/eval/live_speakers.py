"""`make eval-live`: live speakers (shared/live/speakers.py) on the dev conversations, and the choice of
STREAM_SPEAKER_THRESHOLD: swept on the tune half, reported on the check half.

A live session labels each utterance once, when it closes, from that utterance's voice and what it has
heard before: no look-ahead, unlike the file diarizer. Speakers depend on the utterances' boundaries and
voices only, so every conversation is cut by the live endpointer and embedded once (the speaker encoder,
in-process), and the tracker is replayed per threshold. Scored as utterance-level turns: DER (collar 0.5,
overlap skipped, as `make eval`), and how often the speaker count comes out right. The threshold is the
one with the lowest tune DER or, within a point of it, the one counting speakers right most often.

    python -m local_dev.eval.live_speakers [--limit N] [--thresholds 0.2,0.25,...]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from local_dev.eval import sets
from local_dev.eval.scoring import der
from shared.core.config import Settings
from shared.core.domain import SAMPLE_RATE, SpeakerHints
from shared.live.endpoint import Endpointer
from shared.live.speakers import SpeakerTracker
from shared.media.decode import decode
from shared.pipeline.diarization.embedded import EmbeddedDiarizer

FEED = 8000  # samples a feed (0.5 s), as a live client sends them


def utterances(audio: np.ndarray, settings) -> list[tuple[int, int]]:
    """The live session's utterances, cut as its endpointer cuts them with these settings."""
    ep = Endpointer(threshold=settings.stream_vad_threshold, neg_threshold=settings.stream_vad_neg_threshold,
                    silence_ms=settings.stream_silence_ms, max_utterance_s=settings.stream_max_utterance_s)
    bounds, start = [], None
    for at in range(0, len(audio), FEED):
        for b in ep.feed(audio[at : at + FEED]):
            if b.kind == "start":
                start = b.sample
            else:
                bounds.append((start, b.sample))
    bounds += [(start, b.sample) for b in ep.close(len(audio))]
    return bounds


def replay(voices, threshold: float, hints: SpeakerHints, eager: float = 0.5) -> str:
    tracker, rows = SpeakerTracker(threshold, hints, eager=eager), []
    for (a, b), voice in voices:
        speaker, _new = tracker.assign(voice, (b - a) / SAMPLE_RATE)
        rows.append(f"SPEAKER file 1 {a / SAMPLE_RATE:.3f} {(b - a) / SAMPLE_RATE:.3f} <NA> <NA> {speaker} <NA> <NA>\n")
    return "".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=0, help="conversations per half (0: all)")
    parser.add_argument("--thresholds", default="0.1,0.125,0.15,0.175,0.2,0.25,0.3,0.4")
    parser.add_argument("--eager", default="0.5,0.75,1.0", help="distance factor below min_speakers, swept with hints")
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None, device="cpu")
    encoder = EmbeddedDiarizer.from_settings(settings)
    items = [i for i in sets.load_items() if i.group == "conv-clean"]
    halves: dict[str, list] = {"tune": [], "check": []}
    cut = f"{settings.stream_vad_threshold:g}-{settings.stream_vad_neg_threshold:g}-{settings.stream_silence_ms}"
    cache = sets.OUT_DIR / f"live_voices-{cut}"
    cache.mkdir(parents=True, exist_ok=True)
    for item in items:
        if args.limit and len(halves[item.half]) >= args.limit:
            continue
        saved = cache / f"{item.name}.npz"
        if saved.exists():
            data = np.load(saved)
            voices = [((int(a), int(b)), v) for (a, b), v in zip(data["bounds"], data["voices"])]
        else:
            audio = decode(item.audio).samples
            voices = [((a, b), encoder.embed_voice(audio[a:b])) for a, b in utterances(audio, settings)]
            np.savez(saved, bounds=np.array([v[0] for v in voices]).reshape(-1, 2),
                     voices=np.array([v[1] for v in voices]).reshape(-1, 256))
        halves[item.half].append((item, voices))
    print(f"{sum(len(v) for v in halves.values())} conversations", flush=True)
    thresholds = [float(t) for t in args.thresholds.split(",")]

    def scores(half: str, threshold: float, hinted: bool = False, eager: float = 0.5) -> tuple[float, float]:
        ders, right = [], 0
        for item, voices in halves[half]:
            hints = SpeakerHints(num_speakers=item.num_speakers) if hinted else SpeakerHints()
            rttm = replay(voices, threshold, hints, eager)
            ders.append(der(item.rttm, rttm))
            right += len({line.split()[7] for line in rttm.splitlines()}) == item.num_speakers
        return statistics.mean(ders), right / max(len(halves[half]), 1)

    print("\n| threshold | tune DER | tune count right |\n|---:|---:|---:|")
    tuned = {t: scores("tune", t) for t in thresholds}
    for t, (d, c) in tuned.items():
        print(f"| {t:g} | {d:.3f} | {c:.0%} |")
    # the best DER, or within a point of it the threshold that counts speakers right most often (DER is
    # flat near its minimum; the count is not)
    lowest = min(d for d, _c in tuned.values())
    best = max((t for t, (d, _c) in tuned.items() if d <= lowest + 0.01), key=lambda t: tuned[t][1])
    eagers = {float(e): scores("tune", best, hinted=True, eager=float(e))[0] for e in args.eager.split(",")}
    print("\n| eager (with num_speakers) | tune DER |\n|---:|---:|")
    for e, d in eagers.items():
        print(f"| {e:g} | {d:.3f} |")
    eager = min(eagers, key=eagers.get)
    d, c = scores("check", best)
    dh, _ = scores("check", best, hinted=True, eager=eager)
    print(f"\nchosen on the tune half: threshold {best:g}, eager {eager:g}; check half ({len(halves['check'])} "
          f"conversations): DER {d:.3f}, count right {c:.0%}; with num_speakers given: DER {dh:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
