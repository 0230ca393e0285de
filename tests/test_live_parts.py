"""The live engine's parts on their own: LocalAgreement-2, speaker centroids, the endpointer on real
speech, audio input (PCM16 in odd pieces, 24 kHz, Opus in WebM and Ogg) and resume de-duplication."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, encode_as, load_audio, reference_turns

from shared.core.domain import SAMPLE_RATE, SpeakerHints, Word
from shared.live.agreement import LocalAgreement
from shared.live.audio_in import ContainerInput, Pcm16Input
from shared.live.endpoint import Endpointer
from shared.live.speakers import SpeakerTracker


def words(text: str, start: float = 0.0, step: float = 0.4) -> list[Word]:
    return [Word(start=start + i * step, end=start + i * step + 0.3, word=" " + w) for i, w in enumerate(text.split())]


# --- LocalAgreement-2 ---
def test_agreement_commits_only_what_two_hypotheses_share():
    la = LocalAgreement()
    assert la.update(words("and so my")) == []  # one hypothesis commits nothing
    assert [w.word for w in la.update(words("and so my fellow"))] == [" and", " so", " my"]
    assert la.update(words("and so my fellow")) == words("and so my fellow")[3:]
    # a later hypothesis that rewrites committed words retracts nothing, and its new tail still counts
    assert la.update(words("and sew my fellow americans ask")) == []
    assert [w.word for w in la.update(words("and so my fellow americans ask not"))] == [" americans", " ask"]
    assert [w.word for w in la.committed] == [" and", " so", " my", " fellow", " americans", " ask"]


def test_agreement_ignores_case_and_punctuation_and_keeps_first_sighting():
    la = LocalAgreement()
    la.update([Word(start=0.0, end=0.3, word=" Ask"), Word(start=0.4, end=0.7, word=" not!")])
    got = la.update([Word(start=0.02, end=0.31, word=" ask,"), Word(start=0.4, end=0.7, word=" not")])
    assert [(w.word, w.start) for w in got] == [(" Ask", 0.0), (" not!", 0.4)]


# --- speakers ---
def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_speakers_found_by_distance_and_bounded_by_hints():
    a, b, c = unit([1, 0, 0]), unit([0, 1, 0]), unit([0, 0, 1])
    free = SpeakerTracker(0.3)
    got = [free.assign(e, 3.0) for e in (a, b, unit([0.95, 0.05, 0]), c)]
    assert got == [("SPEAKER_00", True), ("SPEAKER_01", True), ("SPEAKER_00", False), ("SPEAKER_02", True)]
    two = SpeakerTracker(0.3, SpeakerHints(num_speakers=2))
    assert [two.assign(e, 3.0)[0] for e in (a, b, c)][:2] == ["SPEAKER_00", "SPEAKER_01"] and two.count == 2
    short = SpeakerTracker(0.3)
    short.assign(a, 3.0)
    assert short.assign(b, 0.5) == ("SPEAKER_00", False)  # too short to found a speaker
    eager = SpeakerTracker(0.3, SpeakerHints(min_speakers=2), eager=0.5)
    eager.assign(a, 3.0)
    assert eager.assign(unit([0.8, 0.6, 0]), 3.0)[1]  # 0.2 away: enough while fewer than min_speakers


def test_labels_settle_when_later_voices_show_two_speakers_are_one():
    rng = np.random.default_rng(0)
    a, b = unit([1, 0, 0, 0]), unit([0, 0, 1, 0])

    def near(v, spread=0.12):
        return unit(v + rng.normal(0, spread, 4))

    # a voice's first utterance lands 0.25 from its second: at a 0.2 threshold the tracker founds two speakers
    tracker = SpeakerTracker(0.2, recluster=0.2)
    assert tracker.assign(a, 3.0, 0) == ("SPEAKER_00", True)
    assert tracker.settle() == []
    assert tracker.assign(unit([0.75, 0.66, 0, 0]), 3.0, 1)[0] == "SPEAKER_01"
    moves = tracker.settle()  # two utterances 0.25 apart: still two clusters at 0.2
    assert moves == [] and tracker.count == 2
    for item in range(2, 8):  # more of the voice between them: one speaker, and item 1 is relabelled
        tracker.assign(near(unit([0.9, 0.35, 0, 0])), 3.0, item)
        moves += tracker.settle()
    assert tracker.speaker_of(1) == "SPEAKER_00"
    assert any(1 in m.items and m.speaker == "SPEAKER_00" and m.previous == "SPEAKER_01" for m in moves)
    # a different voice still founds its own speaker, and keeps it
    for item in range(8, 12):
        tracker.assign(near(b), 3.0, item)
        tracker.settle()
    assert {tracker.speaker_of(i) for i in range(8, 12)} == {tracker.speaker_of(8)} != {"SPEAKER_00"}
    assert len(tracker.labels) == 2


# --- endpointer ---
def boundaries(audio: np.ndarray, pieces: list[int], **kwargs) -> list[tuple[str, int]]:
    ep, out, at = Endpointer(**kwargs), [], 0
    for n in pieces:
        piece = audio[at : at + n]
        out += [(b.kind, b.sample) for b in ep.feed(piece)]
        at += len(piece)
    out += [(b.kind, b.sample) for b in ep.close(at)]
    return out


def test_endpointer_finds_the_fixture_turns_whatever_the_piece_sizes():
    audio = load_audio(TWO_SPEAKERS)
    rng = np.random.default_rng(1)
    random_pieces = list(rng.integers(1, 9000, size=len(audio) // 4000 + 1))
    whole = boundaries(audio, [len(audio)])
    assert boundaries(audio, random_pieces) == whole == boundaries(audio, [8000] * (len(audio) // 8000 + 1))
    starts = [s / SAMPLE_RATE for k, s in whole if k == "start"]
    ends = [s / SAMPLE_RATE for k, s in whole if k == "end"]
    assert len(starts) == len(ends) and all(a < b for a, b in zip(starts, ends))
    # every reference turn lies inside one utterance (a turn may hold pauses that split it)
    for _speaker, start, end in reference_turns(TWO_SPEAKERS):
        assert any(a <= start + 0.3 and b >= start for a, b in zip(starts, ends)), (start, end)
        assert any(a <= end and b >= end - 0.3 for a, b in zip(starts, ends)), (start, end)


def test_endpointer_cuts_speech_longer_than_the_limit():
    audio = load_audio(ONE_SPEAKER)
    got = boundaries(audio, [4000] * (len(audio) // 4000 + 1), max_utterance_s=5.0, silence_ms=3000)
    spans = [(a, b) for (k1, a), (k2, b) in zip(got[::2], got[1::2])]
    assert [k for k, _ in got] == ["start", "end"] * len(spans)
    assert all(b - a <= 5.0 * SAMPLE_RATE for a, b in spans) and len(spans) >= 4


# --- audio input ---
def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def test_pcm16_input_in_odd_pieces_equals_one_piece():
    raw = pcm16(load_audio(ONE_SPEAKER)[: 3 * SAMPLE_RATE])
    whole, pieces = [], []
    Pcm16Input(whole.append).write(raw)
    split = Pcm16Input(pieces.append)
    for i in range(0, len(raw), 777):
        split.write(raw[i : i + 777])
    assert np.array_equal(np.concatenate(whole), np.concatenate(pieces))


def test_pcm16_input_resamples_24k_to_16k():
    tone = np.sin(2 * np.pi * 440 * np.arange(24000 * 2) / 24000).astype(np.float32) * 0.5
    out = []
    inp = Pcm16Input(out.append, rate=24000)
    raw = pcm16(tone)
    for i in range(0, len(raw), 4802):
        inp.write(raw[i : i + 4802])
    inp.close()
    got = np.concatenate(out)
    assert abs(len(got) - 2 * SAMPLE_RATE) <= 32
    spectrum = np.abs(np.fft.rfft(got[1000:17000]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 16000 - 440) < 2


@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_opus_stream_in_pieces_decodes_as_one_stream(fmt, tmp_path):
    path = encode_as(TWO_SPEAKERS, fmt, tmp_path / f"two.{fmt}")
    data, out, errors = path.read_bytes(), [], []
    inp = ContainerInput(out.append, on_error=errors.append)
    for i in range(0, len(data), 3000):  # pieces that do not decode alone
        inp.write(data[i : i + 3000])
    inp.close()
    got, want = np.concatenate(out), load_audio(TWO_SPEAKERS)
    assert not errors and abs(len(got) - len(want)) < 0.05 * SAMPLE_RATE
    n = min(len(got), len(want))
    assert np.corrcoef(got[:n], want[:n])[0, 1] > 0.98


def test_undecodable_stream_reports_an_error():
    errors = []
    inp = ContainerInput(lambda _s: None, on_error=errors.append)
    inp.write(b"not a media file at all " * 400)
    inp.close()
    assert errors and "Opus" in errors[0]
