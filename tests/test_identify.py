"""Speakers named after known voices (shared/pipeline/identify.py): the matching on its own, then the
real encoder and pipeline on the two-speaker fixture (the reader and JFK)."""

from __future__ import annotations

import numpy as np
import pytest

from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, reference_turns
from shared.core.domain import SpeakerHints, TranscribeOptions, Turn, VoicePrint
from shared.pipeline.identify import KnownVoice, identify, match_speakers


def unit(*values: float) -> np.ndarray:
    v = np.zeros(256, np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def prints(**vectors: np.ndarray) -> dict[str, VoicePrint]:
    return {label: VoicePrint(v, 10.0) for label, v in vectors.items()}


ALICE, BOB, CAROL = KnownVoice("a" * 32, "Alice", unit(1, 0, 0)), KnownVoice("b" * 32, "Bob", unit(0, 1, 0)), \
    KnownVoice("c" * 32, "Carol", unit(0, 0, 1))  # fmt: skip


def test_best_pairs_first_one_voice_per_speaker_and_only_above_the_threshold():
    speakers = prints(SPEAKER_00=unit(1, 0.3, 0), SPEAKER_01=unit(1, 0.1, 0), SPEAKER_02=unit(0.2, 0.2, 1))
    matched, crowded = match_speakers(speakers, [ALICE, BOB, CAROL], threshold=0.9)
    # SPEAKER_01 is closer to Alice than SPEAKER_00 is: it gets her; SPEAKER_00 is not Bob (0.29)
    assert {label: i.name for label, i in matched.items()} == {"SPEAKER_01": "Alice", "SPEAKER_02": "Carol"}
    assert matched["SPEAKER_01"].confidence == pytest.approx(float(unit(1, 0.1, 0) @ ALICE.vector), abs=1e-3)
    assert matched["SPEAKER_01"].voice_id == "a" * 32
    assert crowded == []  # Bob sounds like nobody


def test_a_known_voice_left_over_that_sounds_like_a_named_speaker_is_reported_crowded():
    twins = KnownVoice("d" * 32, "Dana", unit(1, 0.2, 0))
    matched, crowded = match_speakers(prints(SPEAKER_00=unit(1, 0.1, 0)), [ALICE, twins], threshold=0.9)
    assert list(matched) == ["SPEAKER_00"] and len(crowded) == 1 and crowded[0][1] is not matched


def test_a_speaker_without_speech_is_never_named():
    silent = {"SPEAKER_00": VoicePrint(np.zeros(256, np.float32), 0.0)}
    assert match_speakers(silent, [ALICE], threshold=0.5) == ({}, [])


def test_rediarization_with_one_more_speaker_is_kept_only_when_it_names_more_voices():
    merged = [Turn(start=0, end=5, speaker="SPEAKER_00"), Turn(start=5, end=10, speaker="SPEAKER_00")]
    split = [Turn(start=0, end=5, speaker="SPEAKER_00"), Turn(start=5, end=10, speaker="SPEAKER_01")]
    voice_of = {(0, 5): unit(1, 0, 0), (5, 10): unit(0.85, 0.5, 0)}

    def voiceprints(groups):
        return [VoicePrint(_mean([voice_of[s] for s in spans]), 10.0) for spans in groups]

    close_to_alice = KnownVoice("e" * 32, "Eve", unit(0.85, 0.5, 0))
    asked = []

    def rediarize(hints: SpeakerHints):
        asked.append(hints)
        return split

    turns, names = identify(merged, [ALICE, close_to_alice], 0.85, voiceprints=voiceprints, rediarize=rediarize)
    assert asked and asked[0].min_speakers == 2
    assert [t.speaker for t in turns] == ["Alice", "Eve"] and set(names) == {"Alice", "Eve"}
    # with the count given, nothing is re-run
    asked.clear()
    turns, _ = identify(merged, [ALICE, close_to_alice], 0.85, voiceprints=voiceprints, rediarize=rediarize,
                        hints=SpeakerHints(num_speakers=1))  # fmt: skip
    assert not asked and {t.speaker for t in turns} == {"Alice"}


def _mean(vectors):
    m = np.mean(vectors, axis=0)
    return (m / np.linalg.norm(m)).astype(np.float32)


@pytest.mark.slow
def test_the_reader_and_jfk_are_named_in_a_real_transcription(worker, runner, settings):
    from shared.pipeline.flow import transcribe

    encoder = worker.voice_encoder
    reader = encoder.voiceprint(load_audio(ONE_SPEAKER), [(0.0, 22.0)])
    jfk_turn = next((s, e) for who, s, e in reference_turns() if who == "jfk")
    jfk = encoder.voiceprint(load_audio(TWO_SPEAKERS), [jfk_turn])
    assert reader.speech_s > 15 and 3 < jfk.speech_s < jfk_turn[1] - jfk_turn[0] + 0.2
    assert float(reader.vector @ jfk.vector) < 0.7  # two people
    known = [KnownVoice("1" * 32, "Reader", reader.vector), KnownVoice("2" * 32, "JFK", jfk.vector)]
    transcript = transcribe(load_audio(TWO_SPEAKERS), TranscribeOptions(language="en"), runner, known=known,
                            match_threshold=settings.voice_match_threshold)  # fmt: skip
    expected = {"librivox_reader": "Reader", "jfk": "JFK"}
    for seg in transcript.segments:
        middle = (seg.start + seg.end) / 2
        who = next(w for w, s, e in reference_turns() if s - 0.5 <= middle <= e + 0.5)
        assert seg.speaker == expected[who], (seg.start, seg.text)
        assert seg.speaker_id == ("1" * 32 if who != "jfk" else "2" * 32)
        assert settings.voice_match_threshold <= seg.speaker_confidence <= 1.0
    assert set(transcript.speakers) == {"Reader", "JFK"}


@pytest.mark.slow
def test_a_sample_with_two_voices_is_counted_as_two(worker):
    audio = load_audio(TWO_SPEAKERS)
    both = worker.voiceprints(audio, [[(0.0, 14.0)], [(0.3, 7.0)]], count_voices=True)
    assert both[0].voices >= 2 and both[1].voices == 1
