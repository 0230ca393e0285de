"""The pyannote adapter with pyannote.audio's REAL pipeline code on a random-weight local checkpoint.

Runs only in the pyannote environment: `make test-pyannote` (pytest -m pyannote). The weights are random
(tests/pyannote_checkpoint.py), so the turns mean nothing: these tests check the adapter's contract
(types, bounds, labels, order, speaker-count hints, settings wiring, thread safety), not accuracy.
Nothing may reach the hub: HF_HUB_OFFLINE=1 and every hub download is made to fail loudly.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from shared.core.domain import SAMPLE_RATE, SpeakerHints, Turn

pytestmark = pytest.mark.pyannote

LABEL_RE = re.compile(r"^SPEAKER_\d{2}$")


def _load_builder():
    path = Path(__file__).with_name("pyannote_checkpoint.py")
    spec = importlib.util.spec_from_file_location("pyannote_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("PYANNOTE_METRICS_ENABLED", "false")
        pytest.importorskip("pyannote.audio", reason="needs the pyannote environment: make test-pyannote")
        import huggingface_hub.constants
        import pyannote.audio.utils.hf_hub as pa_hub

        def no_hub(*args, **kwargs):
            raise AssertionError(f"pyannote tried to reach the hub: {args} {kwargs}")

        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(pa_hub, "hf_hub_download", no_hub)
        yield


@pytest.fixture(scope="module")
def pipeline_config(offline, tmp_path_factory) -> Path:
    # XVectorSincNet embeddings and a 5 s window step keep one 30 s run to seconds on 2 CPU cores
    folder = tmp_path_factory.mktemp("pyannote-random")
    return _load_builder().build_random_pipeline(folder, embedding="xvector", segmentation_step=0.5)


@pytest.fixture(scope="module")
def diarizer(pipeline_config):
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    return PyannoteDiarizer(str(pipeline_config), device="cpu")


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """pyannote.audio's own 30 s two-speaker sample (shipped in its wheel), as 16 kHz mono float32."""
    spec = importlib.util.find_spec("pyannote.audio")
    path = Path(spec.origin).parent / "sample" / "sample.wav"
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
        pcm = wav.readframes(wav.getnframes())
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def assert_contract(turns: list[Turn], duration: float) -> set[str]:
    assert isinstance(turns, list)
    assert all(isinstance(turn, Turn) for turn in turns)
    for turn in turns:
        assert 0.0 <= turn.start < turn.end <= duration + 1e-6, turn
        assert LABEL_RE.match(turn.speaker), turn.speaker
    starts = [turn.start for turn in turns]
    assert starts == sorted(starts)
    # labels are numbered in order of first appearance: SPEAKER_00 speaks first, no gaps
    first_seen: list[str] = []
    for turn in turns:
        if turn.speaker not in first_seen:
            first_seen.append(turn.speaker)
    assert first_seen == [f"SPEAKER_{i:02d}" for i in range(len(first_seen))]
    return set(first_seen)


@pytest.fixture(scope="module")
def two_speakers(diarizer, sample) -> list[Turn]:
    return diarizer.diarize(sample, SpeakerHints(num_speakers=2))


def test_diarize_sample(diarizer, sample):
    duration = sample.size / SAMPLE_RATE
    turns = diarizer.diarize(sample)
    assert turns, "the random pipeline found no speech at all"
    assert_contract(turns, duration)
    assert diarizer.name == "pyannote"


def test_exclusive_turns_do_not_overlap(two_speakers):
    for before, after in zip(two_speakers, two_speakers[1:]):
        assert after.start >= before.end - 1e-3, (before, after)


@pytest.mark.parametrize(
    ("hints", "most"),
    [
        (SpeakerHints(num_speakers=1), 1),
        (SpeakerHints(max_speakers=1), 1),
        (SpeakerHints(min_speakers=1, max_speakers=2), 2),
    ],
)
def test_speaker_hints_bound_the_labels(diarizer, sample, hints, most):
    turns = diarizer.diarize(sample, hints)
    assert turns
    labels = assert_contract(turns, sample.size / SAMPLE_RATE)
    assert 1 <= len(labels) <= most


def test_num_speakers_two_gives_two(two_speakers, sample):
    # VBx re-clusters with k-means to exactly num_speakers; the exclusive annotation keeps both unless
    # one cluster only ever speaks in overlap, which does not happen with these fixed random weights.
    labels = assert_contract(two_speakers, sample.size / SAMPLE_RATE)
    assert labels == {"SPEAKER_00", "SPEAKER_01"}


def test_overlapping_variant(pipeline_config, sample):
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    diarizer = PyannoteDiarizer(str(pipeline_config), exclusive=False)
    turns = diarizer.diarize(sample, SpeakerHints(num_speakers=2))
    assert turns
    assert len(assert_contract(turns, sample.size / SAMPLE_RATE)) <= 2


@pytest.mark.parametrize("seconds", [0.0, 0.05])
def test_empty_or_tiny_input(diarizer, seconds):
    assert diarizer.diarize(np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)) == []


def test_short_clip_and_other_dtypes(diarizer, sample):
    clip = sample[: 2 * SAMPLE_RATE].astype(np.float64)  # shorter than one 10 s window, float64 in
    assert_contract(diarizer.diarize(clip), 2.0)
    read_only = np.frombuffer(sample[: 3 * SAMPLE_RATE].tobytes(), dtype=np.float32)
    assert_contract(diarizer.diarize(read_only), 3.0)


def test_concurrent_calls_match_sequential(diarizer, sample):
    clip = sample[: 12 * SAMPLE_RATE]
    hints = SpeakerHints(num_speakers=2)
    expected = diarizer.diarize(clip, hints)
    results: list = [None, None]
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            results[slot] = diarizer.diarize(clip, hints)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [expected, expected]


def test_build_diarizer_pyannote_and_auto(pipeline_config, monkeypatch):
    from shared.core.config import Settings
    from shared.pipeline.diarization import build_diarizer
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    monkeypatch.setenv("PYANNOTE_MODEL", str(pipeline_config))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.delenv("DIARIZER", raising=False)

    auto = Settings(_env_file=None)
    assert auto.diarizer == "auto" and auto.resolved_diarizer == "pyannote"
    assert isinstance(build_diarizer(auto), PyannoteDiarizer)

    explicit = Settings(_env_file=None, diarizer="pyannote")
    built = build_diarizer(explicit)
    assert isinstance(built, PyannoteDiarizer) and built.device == "cpu"

    monkeypatch.delenv("PYANNOTE_MODEL")
    assert Settings(_env_file=None).resolved_diarizer == "embedded"


def test_folder_path_works_too(pipeline_config, sample):
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    diarizer = PyannoteDiarizer(str(pipeline_config.parent))
    assert_contract(diarizer.diarize(sample[: 5 * SAMPLE_RATE]), 5.0)


def test_community_architecture_resnet34(offline, tmp_path, sample):
    """WeSpeakerResNet34 embeddings, as in pyannote/speaker-diarization-community-1 (slow on CPU: 10 s)."""
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    config = _load_builder().build_random_pipeline(tmp_path, embedding="resnet34", segmentation_step=0.5)
    turns = PyannoteDiarizer(str(config)).diarize(sample[: 10 * SAMPLE_RATE], SpeakerHints(max_speakers=2))
    assert turns
    assert len(assert_contract(turns, 10.0)) <= 2


def test_missing_local_path_fails_clearly(offline, tmp_path):
    from shared.core.config import Settings
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    with pytest.raises(FileNotFoundError, match="PYANNOTE_MODEL"):
        PyannoteDiarizer(str(tmp_path / "nope" / "config.yaml"))
    with pytest.raises(ValueError, match="PYANNOTE_MODEL"):
        PyannoteDiarizer.from_settings(Settings(_env_file=None, diarizer="pyannote", pyannote_model=None))


def test_hub_id_is_not_fetched_offline(offline):
    """A hub id goes to the hub (here: refused, offline) and the error says what to do."""
    from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

    with pytest.raises(RuntimeError, match="HUGGINGFACE_TOKEN"):
        PyannoteDiarizer("pyannote/speaker-diarization-community-1")


def test_telemetry_is_off(diarizer):
    from pyannote.audio.telemetry.metrics import is_metrics_enabled

    assert not is_metrics_enabled()
