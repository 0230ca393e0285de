"""Speech over low-frequency rumble is still speech, to chunking and to the diarizer.

A far voice through a band-limited channel (reverberant room, telephone band, mu-law) over brown noise
20 dB below it: plainly audible, yet Silero scored it under 0.05 for most of its length, so chunking
and the diarizer never saw it (13.8 of 20.1 s missed at 0.15 / 0.05, 18.0 s at the diarizer's old
0.35 / 0.2). Silero now hears the audio high-passed at 80 Hz (shared/pipeline/vad.py), and the diarizer's speech
ends only once Silero's score stays under 0.05.

The reader is the LibriVox fixture (tests/fixtures); the room, band and noise are made here."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, load_audio, load_reference

from local_dev.eval.corpus import add_noise, phone, reverberate
from local_dev.eval.scoring import uncovered_seconds
from shared.pipeline.diarization.embedded import EmbeddedDiarizer
from shared.pipeline.vad import SileroVad

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def far_voice() -> tuple[np.ndarray, list[tuple[float, float]]]:
    x = load_audio(ONE_SPEAKER)
    rng = np.random.default_rng(3)
    y = add_noise(phone(reverberate(x, 0.8, rng)), 20.0, rng, kind="brown")
    speech = [(t["start"], t["end"]) for t in load_reference(ONE_SPEAKER)["turns"]]
    return y, speech


def test_chunking_vad_hears_a_far_phone_voice_over_rumble(far_voice):
    audio, speech = far_voice
    vad = SileroVad()
    regions = vad.speech_regions(audio, threshold=vad.split_threshold, neg_threshold=vad.split_neg_threshold)
    assert uncovered_seconds(speech, [(r.start, r.end) for r in regions]) < 1.0


def test_diarizer_gives_a_far_phone_voice_over_rumble_one_speaker(far_voice):
    audio, speech = far_voice
    turns = EmbeddedDiarizer().diarize(audio)
    assert {t.speaker for t in turns} == {"SPEAKER_00"}
    assert uncovered_seconds(speech, [(t.start, t.end) for t in turns]) < 1.0
