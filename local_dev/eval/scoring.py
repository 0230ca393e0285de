"""Accuracy measures that `make eval`, the benchmarks (local_dev/bench/) and the tests score with: WER
after light normalisation, DER and its components, JER, uncovered speech.

pyannote.metrics (about a second to import) loads inside the functions that score with it: the tests
import normalize_words from here (tests/audio_fixtures.py) and mostly need nothing else."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

import jiwer
from pyannote.core import Annotation, Segment

SPELLINGS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize_words(text: str) -> list[str]:
    """Lower case, punctuation and hyphens dropped, common abbreviations spelled out."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [SPELLINGS.get(w, w) for w in words]


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(" ".join(normalize_words(reference)), " ".join(normalize_words(hypothesis)))


def der(reference_rttm: str, hypothesis_rttm: str, *, collar: float = 0.5) -> float:
    """Diarization error rate (pyannote.metrics), forgiving `collar` seconds around each boundary."""
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    with TemporaryDirectory() as tmp:
        ref_path, hyp_path = Path(tmp, "ref.rttm"), Path(tmp, "hyp.rttm")
        ref_path.write_text(reference_rttm)
        hyp_path.write_text(hypothesis_rttm)
        ref = next(iter(load_rttm(ref_path).values()))
        hyp = next(iter(load_rttm(hyp_path).values()), None)
    if hyp is None:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(DiarizationErrorRate(collar=collar, skip_overlap=True)(ref, hyp))


# --- `make eval` (local_dev/eval/__main__.py): error counts that add up over files -------------------


def word_errors(reference: str, hypothesis: str) -> dict[str, int]:
    """Reference word count and jiwer's substitutions, deletions and insertions (normalised words)."""
    ref, hyp = " ".join(normalize_words(reference)), " ".join(normalize_words(hypothesis))
    if not ref:
        return {"ref_words": 0, "substitutions": 0, "deletions": 0, "insertions": len(hyp.split())}
    if not hyp:
        n = len(ref.split())
        return {"ref_words": n, "substitutions": 0, "deletions": n, "insertions": 0}
    out = jiwer.process_words(ref, hyp)
    return {"ref_words": len(ref.split()), "substitutions": out.substitutions, "deletions": out.deletions,
            "insertions": out.insertions}


def rttm_annotation(rttm: str, uri: str = "file"):
    """Every SPEAKER line of an RTTM text (whatever its file id) as one pyannote Annotation."""
    ann = Annotation(uri=uri)
    for i, line in enumerate(rttm.splitlines()):
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER" and float(f[4]) > 0:
            ann[Segment(float(f[3]), float(f[3]) + float(f[4])), i] = f[7]
    return ann


def turns_annotation(turns, uri: str = "file"):
    """(start, end, speaker) items or objects with those attributes as a pyannote Annotation."""
    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        start, end, speaker = (t.start, t.end, t.speaker) if hasattr(t, "start") else t
        if end > start:
            ann[Segment(start, end), i] = str(speaker)
    return ann


def diarization_counts(reference, hypothesis, *, collar: float, skip_overlap: bool = False) -> dict[str, float]:
    """DER components in seconds (pyannote.metrics; overlap scored unless `skip_overlap`): they add up
    over files."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)(reference, hypothesis, detailed=True)
    return {k: float(d[name]) for k, name in (("confusion", "confusion"), ("missed", "missed detection"),
                                                ("false_alarm", "false alarm"), ("total", "total"))}


def jer(reference, hypothesis) -> float:
    """Jaccard error rate (pyannote.metrics, no collar, overlap scored)."""
    from pyannote.metrics.diarization import JaccardErrorRate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(JaccardErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis))


def merged_spans(spans) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def uncovered_seconds(reference_spans, covering_spans, *, pad: float = 0.0) -> float:
    """Seconds of the union of `reference_spans` that no span of `covering_spans` (each widened by `pad`
    seconds on both sides, a collar for boundary jitter) covers."""
    ref, cover = merged_spans(reference_spans), merged_spans((a - pad, b + pad) for a, b in covering_spans)
    total, j = 0.0, 0
    for a, b in ref:
        covered = 0.0
        while j < len(cover) and cover[j][1] <= a:
            j += 1
        k = j
        while k < len(cover) and cover[k][0] < b:
            covered += min(b, cover[k][1]) - max(a, cover[k][0])
            k += 1
        total += (b - a) - covered
    return total
