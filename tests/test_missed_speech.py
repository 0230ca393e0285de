"""No speech lost before Whisper hears it: quiet, distant, reverberant and tinny speech reaches the model,
and a stretch with no speech in it (noise, crowd babble, music, silence) still yields no words.

Fixtures (tests/fixtures/README.md): `quiet_utterance` (a short JFK utterance at -30 dBFS between the
reader's louder turns, then 3 s of pink noise alone) and `two_rooms` (the reader, JFK reverberant and
10 dB quieter "in another room", the reader reverberant). Silero at its default threshold marked all of
JFK in `two_rooms` as silence, and Whisper skipped a quiet voice between loud ones inside one chunk.
The noise-only stretch is loud enough for the VAD's second look to hand it to Whisper: Whisper's own
no-speech judgement must reject it.

`tinny_voice` (the reader, then JFK high-passed at 2 kHz, -40 dBFS, over a -48 dBFS pink floor): Silero
scores JFK under 0.1 and the old second look (15 dB over the floor) did not reach him, so all his words
were lost. `babble` (8 overlapped, time-shifted, re-speeded, reverberated copies of the reader and JFK):
the pipeline said "Thank you. Thank you. Thank you very much." where plain faster-whisper says nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import load_audio, load_reference
from scoring import words_of

from shared.core.domain import Chunk, Decode, TranscribeOptions, Word

from shared.media.pcm import ChunkAudio
from shared.pipeline.flow import transcribe
from shared.pipeline.transcriber import _across_cuts, _unheard_spans, heard_as_speech, merge_words, unsure_share

FIXTURES = Path(__file__).parent / "fixtures"
QUIET = FIXTURES / "quiet_utterance.flac"
TWO_ROOMS = FIXTURES / "two_rooms.flac"
TINNY = FIXTURES / "tinny_voice.flac"
BABBLE = FIXTURES / "babble.flac"


def _words_in(words, start: float, end: float, margin: float = 0.3) -> list[str]:
    return words_of(" ".join(w.word for w in words if start - margin <= w.start <= end + margin))


def _recall(ref_text: str, heard: list[str]) -> float:
    """Share of the reference's words heard (as a bag of words)."""
    pool = list(heard)
    found = 0
    for word in words_of(ref_text):
        if word in pool:
            pool.remove(word)
            found += 1
    return found / len(words_of(ref_text))


@pytest.fixture(scope="module")
def quiet_words(runner):
    t = transcribe(load_audio(QUIET), TranscribeOptions(diarize=False, word_timestamps=True), runner)
    return [w for s in t.segments for w in s.words]


@pytest.fixture(scope="module")
def two_rooms_words(runner):
    t = transcribe(load_audio(TWO_ROOMS), TranscribeOptions(diarize=False, word_timestamps=True), runner)
    return [w for s in t.segments for w in s.words]


# --- chunking sees quiet speech (Silero only, no Whisper) -----------------------------------------------


def test_chunks_cover_the_quiet_reverberant_voice(worker):
    ref = load_reference(TWO_ROOMS)
    jfk = next(t for t in ref["turns"] if t["speaker"] == "jfk")
    speech = [r for c in worker.vad.split(load_audio(TWO_ROOMS)) for r in c.speech]
    covered = sum(max(0.0, min(b, jfk["end"]) - max(a, jfk["start"])) for a, b in speech)
    assert covered >= 0.8 * (jfk["end"] - jfk["start"]), speech


def test_diarizer_regions_keep_silero_default(worker):
    """speech_regions() without arguments keeps Silero's 0.5 threshold (the diarizer's view); only
    chunking looks lower."""
    audio = load_audio(TWO_ROOMS)
    probs = worker.vad.speech_probabilities(audio)
    default = worker.vad.speech_regions(audio, probs=probs)
    explicit = worker.vad.speech_regions(audio, probs=probs, threshold=0.5, neg_threshold=0.35)
    assert default == explicit


def test_second_look_finds_sound_in_a_vad_silence_and_not_the_noise_floor():
    from shared.pipeline.vad import Region, loud_regions

    levels = np.full(400, -70.0, np.float32)  # 32 ms windows: 12.8 s at the noise floor
    levels[100:140] = -40.0  # 1.3 s of sound that Silero scored as silence
    levels[200:205] = -40.0  # 0.16 s: a click, too short
    levels[300:350] = -40.0  # inside speech Silero found: already heard
    found = loud_regions(levels, [Region(9.5, 11.5)])
    assert len(found) == 1 and 3.1 <= found[0].start <= 3.2 and 4.48 <= found[0].end <= 4.6
    assert loud_regions(np.full(400, -70.0, np.float32), []) == []


def _windows(start: float, end: float) -> slice:
    return slice(int(start * 16000 / 512), int(end * 16000 / 512))


def test_a_tinny_voice_silero_rejects_still_reaches_whisper(worker):
    """VAD chooses where to cut, not what is speech: sound a few dB over the recording's pauses that
    Silero scores under 0.1 is chunked too, and marked unsure."""
    audio = load_audio(TINNY)
    jfk = next(t for t in load_reference(TINNY)["turns"] if t["speaker"] == "jfk")
    probs = worker.vad.speech_probabilities(audio)[_windows(jfk["start"], jfk["end"])]
    assert np.percentile(probs, 90) < 0.1  # the failure's premise: Silero does not call it speech
    chunks = worker.vad.split(audio)
    covered = sum(max(0.0, min(b, jfk["end"]) - max(a, jfk["start"])) for c in chunks for a, b in c.speech)
    unsure = sum(max(0.0, min(b, jfk["end"]) - max(a, jfk["start"])) for c in chunks for a, b in c.unsure)
    # (his two pauses, 1.7 s together, stay out)
    assert covered >= 0.7 * (jfk["end"] - jfk["start"]), [c.speech for c in chunks]
    assert unsure >= 0.6 * (jfk["end"] - jfk["start"]), [c.unsure for c in chunks]


# --- Whisper's own evidence (no models) -------------------------------------------------------------------


def _decode(no_speech: float, logprob: float, compression: float = 1.2) -> Decode:
    return Decode(avg_logprob=logprob, compression_ratio=compression, no_speech_prob=no_speech, temperature=0.0)


def test_whisper_evidence_keeps_speech_and_drops_what_it_heard_in_noise():
    sentence = [_word(0.0, 0.4, "And"), _word(0.4, 0.8, "so"), _word(0.8, 1.3, "my"), _word(1.3, 2.0, "fellow")]
    thanks = [_word(0.0, 0.5, "Thank"), _word(0.5, 1.0, "you.")]
    # values measured with tiny.en: speech (clean to tinny) and crowd babble / music / modulated noise
    assert heard_as_speech(_decode(0.05, -0.1), sentence)
    assert heard_as_speech(_decode(0.52, -0.23), sentence, unsure=0.6)  # the tinny voice
    assert heard_as_speech(_decode(0.3, -0.39), sentence, unsure=0.95)
    assert not heard_as_speech(_decode(0.81, -0.96), thanks)  # babble
    assert not heard_as_speech(_decode(0.87, -0.77), [_word(0.0, 0.3, "you.")], unsure=0.6)  # music
    assert not heard_as_speech(_decode(0.7, -0.8), thanks)  # a stock phrase Whisper thinks is silence
    assert heard_as_speech(_decode(0.2, -0.5), thanks)  # ... and the same words said
    assert heard_as_speech(_decode(0.7, -0.3), thanks)  # ... and said clearly enough
    ask_not = [_word(0.0, 0.4, "Ask"), _word(0.4, 0.8, "not!")]  # a short live utterance decoded alone
    assert heard_as_speech(_decode(0.55, -0.74), ask_not)
    assert not heard_as_speech(_decode(0.61, -1.37), ask_not)  # Whisper's own rule (0.6 / -1.0)
    assert not heard_as_speech(_decode(0.3, -0.7), sentence, unsure=0.9)  # VAD-rejected sound: needs confidence
    assert heard_as_speech(_decode(0.3, -0.7), sentence, unsure=0.1)
    assert not heard_as_speech(_decode(0.05, -0.2, compression=2.6), sentence, unsure=0.9)  # a repetition loop
    assert heard_as_speech(_decode(0.18, -0.08, compression=2.9), sentence)  # a speaker repeating a sentence


def test_unsure_share_is_the_words_time_inside_the_unsure_spans():
    words = [_word(0.0, 1.0, "a"), _word(1.0, 2.0, "b"), _word(2.0, 4.0, "c")]
    assert unsure_share(words, []) == 0.0
    assert unsure_share(words, [(1.5, 3.0)]) == pytest.approx(1.5 / 4.0)
    assert unsure_share(words, [(-1.0, 5.0)]) == pytest.approx(1.0)


# --- second look at speech a decode left unheard (no models) --------------------------------------------


def _word(start: float, end: float, text: str) -> Word:
    return Word(start=start, end=end, word=f" {text}", probability=0.9)


def test_speech_between_heard_words_is_decoded_again():
    chunk = Chunk(index=0, start=0.0, end=20.0, keep_start=0.0, keep_end=20.0,
                  speech=[(0.2, 4.0), (5.0, 9.0), (10.0, 14.0)])
    heard = [_word(0.3, 1.0, "a"), _word(1.0, 3.9, "b"), _word(10.1, 13.9, "c")]
    spans = _unheard_spans(ChunkAudio(chunk, load_audio(QUIET)), heard)
    (span,) = spans  # the unheard speech (5-9 s), between the words around it, and nothing else
    assert 3.9 <= span.chunk.start <= 5.0 and 9.0 <= span.chunk.end <= 10.1
    assert span.chunk.spans() == [(span.chunk.start, span.chunk.end)]


def test_short_unheard_speech_and_wordless_chunks_are_not_decoded_again():
    chunk = Chunk(index=0, start=0.0, end=10.0, keep_start=0.0, keep_end=10.0,
                  speech=[(0.2, 4.0), (4.5, 5.2), (5.5, 9.0)])
    heard = [_word(0.3, 3.9, "a"), _word(5.6, 8.9, "b")]
    audio = load_audio(QUIET)
    assert _unheard_spans(ChunkAudio(chunk, audio), heard) == []  # 0.7 s unheard: under MIN_UNHEARD_S
    assert _unheard_spans(ChunkAudio(chunk, audio), []) == []
    breath = Chunk(index=0, start=0.0, end=10.0, keep_start=0.0, keep_end=10.0, speech=[(0.2, 4.0), (4.2, 5.7), (6.0, 9.0)])
    heard = [_word(0.3, 3.9, "a"), _word(6.1, 8.9, "b")]
    assert _unheard_spans(ChunkAudio(breath, audio), heard) == []  # 1.5 s: a breath, not worth a 30 s window


def test_a_word_spanning_a_pause_cut_out_keeps_the_side_it_was_heard_on():
    """quiet_utterance: noise, a 0.56 s pause cut out of the chunk's audio, then "He": the aligner
    stretched "He" back over the noise (16.59-17.79 s); it belongs after the cut."""
    chunk = Chunk(index=0, start=13.848, end=20.59, keep_start=13.8, keep_end=20.59,
                  pieces=[(13.848, 16.808), (17.37, 20.59)])
    assert _across_cuts(chunk, 16.587, 17.789) == (17.37, 17.789)
    assert _across_cuts(chunk, 16.5, 17.4) == (16.5, 16.808)
    assert _across_cuts(chunk, 17.4, 17.9) == (17.4, 17.9)


def test_words_of_a_second_look_are_merged_in_time_order_without_doubles():
    heard = [_word(0.0, 1.0, "one"), _word(5.0, 6.0, "four")]
    more = [_word(0.9, 1.0, "one"), _word(2.0, 3.0, "two"), _word(3.0, 4.0, "three"), _word(5.1, 5.9, "four")]
    assert [w.word.strip() for w in merge_words(heard, more)] == ["one", "two", "three", "four"]


# --- the whole pipeline with the real models -------------------------------------------------------------


@pytest.mark.slow
def test_quiet_short_utterance_between_louder_speech_is_transcribed(quiet_words):
    ref = load_reference(QUIET)
    quiet = next(t for t in ref["turns"] if t.get("placed", {}).get("dbfs"))
    assert _recall(quiet["text"], _words_in(quiet_words, quiet["start"], quiet["end"])) >= 0.8, quiet_words
    for turn in ref["turns"]:  # the louder turns around it are kept too
        assert _recall(turn["text"], _words_in(quiet_words, turn["start"], turn["end"])) >= 0.7, turn


@pytest.mark.slow
def test_noise_alone_yields_no_words(quiet_words):
    (noise,) = load_reference(QUIET)["noise_only"]
    inside = [w for w in quiet_words if w.end > noise["start"] + 0.3 and w.start < noise["end"] - 0.3]
    assert inside == []


@pytest.mark.slow
def test_voice_from_another_room_is_not_dropped(two_rooms_words):
    ref = load_reference(TWO_ROOMS)
    for turn in ref["turns"]:
        heard = _words_in(two_rooms_words, turn["start"], turn["end"])
        assert _recall(turn["text"], heard) >= 0.7, (turn["speaker"], heard)
    jfk = next(t for t in ref["turns"] if t["speaker"] == "jfk")
    assert {"americans", "country"} <= set(_words_in(two_rooms_words, jfk["start"], jfk["end"]))


@pytest.mark.slow
def test_tinny_voice_silero_rejects_is_transcribed(runner):
    t = transcribe(load_audio(TINNY), TranscribeOptions(diarize=False, word_timestamps=True), runner)
    words = [w for s in t.segments for w in s.words]
    for turn in load_reference(TINNY)["turns"]:
        heard = _words_in(words, turn["start"], turn["end"])
        assert _recall(turn["text"], heard) >= 0.7, (turn["speaker"], heard)
    jfk = next(t for t in load_reference(TINNY)["turns"] if t["speaker"] == "jfk")
    assert {"americans", "country"} <= set(_words_in(words, jfk["start"], jfk["end"]))


@pytest.mark.slow
def test_crowd_babble_yields_no_words(runner):
    t = transcribe(load_audio(BABBLE), TranscribeOptions(diarize=False, word_timestamps=True), runner)
    assert [s.text for s in t.segments] == []


@pytest.mark.slow
def test_music_and_modulated_noise_yield_no_words(runner):
    """Sound well above the floor that is not speech: the second look hands it to Whisper, whose own
    evidence must reject it."""
    rng = np.random.default_rng(5)
    t = np.arange(12 * 16000) / 16000
    music = np.zeros_like(t)
    for k in range(24):  # plucked three-harmonic notes, two a second
        f = [220, 277, 330, 440, 392, 349, 262, 294][k % 8] * (1.5 if k % 3 == 0 else 1.0)
        a, b = int(k * 0.5 * 16000), min(len(t), int((k * 0.5 + 0.9) * 16000))
        music[a:b] += sum(np.sin(2 * np.pi * f * h * t[a:b]) / h for h in (1, 2, 3)) * np.exp(-3 * (t[a:b] - t[a]))
    pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(len(t))) / np.sqrt(np.maximum(np.arange(len(t) // 2 + 1), 1)),
                        len(t))
    pink *= 0.02 / pink.std() * (1 + 0.8 * np.sin(2 * np.pi * 0.7 * t))  # noise swelling and fading
    for audio in (0.05 * music + 0.002 * rng.standard_normal(len(t)), pink):
        out = transcribe(audio.astype(np.float32), TranscribeOptions(diarize=False, word_timestamps=True), runner)
        assert [s.text for s in out.segments] == []


@pytest.mark.slow
def test_digital_silence_and_faint_noise_yield_no_words(runner):
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(16000 * 4, np.float32),
                            (rng.standard_normal(16000 * 6) * 10 ** (-55 / 20)).astype(np.float32)])
    t = transcribe(audio, TranscribeOptions(diarize=False, word_timestamps=True), runner)
    assert [s.text for s in t.segments] == []
