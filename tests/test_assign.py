"""Segments report the decoder statistics of the Whisper segments their words were heard in."""

from __future__ import annotations

import pickle

import pytest

from shared.pipeline.assign import build_segments
from shared.core.domain import Chunk, ChunkTranscript, Decode, TranscribedSegment, Turn, Word

CONFIDENT = Decode(avg_logprob=-0.1, compression_ratio=1.4, no_speech_prob=0.02, temperature=0.0)
DOUBTFUL = Decode(avg_logprob=-0.9, compression_ratio=2.6, no_speech_prob=0.3, temperature=0.2)


def word(start: float, text: str, decode: Decode | None, tokens: tuple[int, ...]) -> Word:
    w = Word(start=start, end=start + 0.3, word=text, probability=0.9)
    return w.heard_in(decode, tokens) if decode else w


def test_a_segment_from_two_whisper_segments_weights_by_its_tokens_and_takes_the_worst():
    words = [word(0.0, " one", CONFIDENT, (530,)), word(0.4, " two", CONFIDENT, (734,)),
             word(0.8, " three", DOUBTFUL, (1115, 7, 9))]  # fmt: skip
    (segment,) = build_segments(words, None)
    assert segment.avg_logprob == pytest.approx((2 * -0.1 + 3 * -0.9) / 5)  # 2 tokens from one, 3 from the other
    assert (segment.compression_ratio, segment.no_speech_prob, segment.temperature) == (2.6, 0.3, 0.2)
    assert segment.tokens == [530, 734, 1115, 7, 9]


def test_segments_cut_inside_one_whisper_segment_each_get_its_values_and_their_own_tokens():
    words = [word(0.0, " Hi.", CONFIDENT, (15902, 13)), word(0.5, " Bye", CONFIDENT, (47843,)),
             word(0.9, " now.", DOUBTFUL, (783, 13))]  # fmt: skip
    turns = [Turn(start=0, end=0.45, speaker="A"), Turn(start=0.45, end=2, speaker="B")]
    first, second = build_segments(words, turns)
    assert (first.avg_logprob, first.no_speech_prob, first.tokens) == (-0.1, 0.02, [15902, 13])
    assert second.avg_logprob == pytest.approx((-0.1 + 2 * -0.9) / 3) and second.tokens == [47843, 783, 13]
    assert second.words[0].decode is CONFIDENT  # the speaker's copy of a word keeps where it was heard


def test_words_without_decoder_statistics_leave_them_null():
    (segment,) = build_segments([word(0.0, " hello", None, ())], None)
    assert segment.avg_logprob is None and segment.tokens is None and segment.no_speech_prob is None
    # a word whose tokens are unknown still counts for the statistics, but the segment's tokens are left out
    (partly,) = build_segments([word(0.0, " a", CONFIDENT, (257,)), word(0.4, " b", DOUBTFUL, ())], None)
    assert partly.tokens is None and partly.avg_logprob == pytest.approx(-0.5) and partly.no_speech_prob == 0.3


def test_statistics_cross_processes_once_per_whisper_segment():
    words = [word(i * 0.4, f" w{i}", CONFIDENT if i < 50 else DOUBTFUL, (i, i + 1)) for i in range(100)]
    chunk = Chunk(index=0, start=0, end=40, keep_start=0, keep_end=40)

    def result_of(words: list[Word]) -> ChunkTranscript:
        segment = TranscribedSegment(start=0, end=40, text="", words=words)
        return ChunkTranscript(chunk=chunk, language="en", segments=[segment])

    result = result_of(words)
    back = pickle.loads(pickle.dumps(result))
    heard = back.segments[0].words
    assert [w.tokens for w in heard] == [w.tokens for w in words] and heard[0].decode == CONFIDENT
    assert len({id(w.decode) for w in heard}) == 2  # shared, not a copy per word
    bare = result_of([Word(**w.model_dump()) for w in words])
    assert len(pickle.dumps(result)) < 1.2 * len(pickle.dumps(bare))


def test_private_statistics_stay_out_of_the_api():
    w = word(0.0, " hi", CONFIDENT, (23105,))
    assert set(w.model_dump()) == {"start", "end", "word", "probability", "speaker"}
    assert set(Word.model_json_schema()["properties"]) == {"start", "end", "word", "probability", "speaker"}
