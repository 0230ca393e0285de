"""Accuracy measures shared by the benchmark and the tests: WER after light normalisation, and DER."""

from __future__ import annotations

import re

SPELLINGS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize_words(text: str) -> list[str]:
    """Lower case, punctuation and hyphens dropped, common abbreviations spelled out."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [SPELLINGS.get(w, w) for w in words]


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(" ".join(normalize_words(reference)), " ".join(normalize_words(hypothesis)))


def der(reference_rttm: str, hypothesis_rttm: str, *, collar: float = 0.5) -> float:
    """Diarization error rate (pyannote.metrics), forgiving `collar` seconds around each boundary."""
    import warnings
    from pathlib import Path
    from tempfile import TemporaryDirectory

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
