"""How close different speakers' voices lie in the embedded diarizer's embedding space, per eval group.

    python -m local_dev.eval.separation [--groups conv-clean,same-clean,same-phone,real] [--limit N]

For every file of the groups: each reference speaker's solo speech (their turns minus everyone else's,
pieces over 0.3 s, the first 20 s; speakers with under 2 s skipped) embedded with the diarizer's
`embed_voice`; then the cosine of every pair of different speakers of the same file. A set whose
voices sit as close as real ones' is a fair place to choose the speaker-count decision.
"""

from __future__ import annotations

import argparse

import numpy as np

from local_dev.eval import scoring as sc
from local_dev.eval import sets
from shared.core.config import Settings
from shared.media.decode import decode
from shared.pipeline.diarization import build_diarizer

SR = 16_000


def speaker_cosines(item: sets.Item, embed) -> list[float]:
    x = decode(item.audio).samples
    ann = sc.rttm_annotation(item.rttm)
    voices = {}
    for spk in ann.labels():
        solo = ann.label_timeline(spk).support()
        for other in ann.labels():
            if other != spk:
                solo = solo.extrude(ann.label_timeline(other).support())
        pieces = [x[int(s.start * SR) : int(s.end * SR)] for s in solo if s.duration > 0.3]
        y = np.concatenate(pieces)[: 20 * SR] if pieces else np.zeros(0, np.float32)
        if len(y) >= 2 * SR:
            voices[spk] = embed(y)
    names = list(voices)
    return [float(voices[a] @ voices[b]) for i, a in enumerate(names) for b in names[i + 1 :]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_dev.eval.separation", description=__doc__.split("\n")[0])
    parser.add_argument("--groups", default="conv-clean,same-clean,same-phone,real")
    parser.add_argument("--limit", type=int, default=None, help="at most N files of each group")
    args = parser.parse_args(argv)

    diarizer = build_diarizer(Settings())
    groups = args.groups.split(",")
    items = [i for i in sets.load_items() if i.group in groups]
    print("| group | files | speaker pairs | cosine mean | median | p90 | > 0.80 | > 0.85 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for group in groups:
        chosen = [i for i in items if i.group == group][: args.limit]
        c = np.array([v for i in chosen for v in speaker_cosines(i, diarizer.embed_voice)])
        if len(c):
            print(f"| {group} | {len(chosen)} | {len(c)} | {c.mean():.3f} | {np.median(c):.3f} "
                  f"| {np.percentile(c, 90):.3f} | {np.mean(c > 0.8):.0%} | {np.mean(c > 0.85):.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
