"""Property tests for every place that maps positions between a batch, a chunk and the clip.

The crash this guards against: segments were matched to their chunk by a key computed in float seconds
on our side and by faster-whisper's own integer arithmetic on the other, and the two disagreed whenever
rounding landed on a frame boundary (KeyError on files of 5+ minutes).
"""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.core.domain import SAMPLE_RATE, Chunk

from shared.media.pcm import ArrayAudio, ChunkAudio, PcmRef, PcmWriter, cut, seconds_to_sample
from shared.pipeline.transcriber import BatchLayout, _owned_words

FPS = 100  # faster-whisper's frames_per_second for 16 kHz audio (hop 160)

lengths = st.lists(st.integers(min_value=160, max_value=30 * SAMPLE_RATE), min_size=1, max_size=64)


def faster_whisper_seek(clip: dict[str, float]) -> int:
    """What faster-whisper 1.2.1 tags a segment with, given our clip timestamps (BatchedInferencePipeline:
    `int(v * sampling_rate)` for the clip start, then `int(offset * frames_per_second)`)."""
    start_sample = int(clip["start"] * SAMPLE_RATE)
    return int(start_sample / SAMPLE_RATE * FPS)


@given(lengths)
@settings(max_examples=400, deadline=None)
def test_every_segment_maps_back_to_the_piece_it_came_from(sizes):
    layout = BatchLayout(sizes)
    for i, clip in enumerate(layout.clip_timestamps()):
        assert layout.piece_of(faster_whisper_seek(clip)) == i


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=200))
@settings(max_examples=200, deadline=None)
def test_pieces_start_mid_frame_and_never_overlap(sizes):
    """The worst case for float rounding: offsets like 0.29 s (sample 4640, frame 29 exactly)."""
    layout = BatchLayout(sizes)
    ends = [s + n for s, n in zip(layout.starts, layout.lengths)]
    assert all(s % 160 == 80 for s in layout.starts)
    assert all(e <= s for e, s in zip(ends, layout.starts[1:])) and ends[-1] == layout.total
    assert all(s - e < 160 for e, s in zip([0, *ends], layout.starts))  # padding under one frame


def test_joined_audio_puts_each_piece_at_its_start():
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) for n in (4640, 1, 16000, 333)]
    layout = BatchLayout([len(a) for a in audios])
    joined = layout.join(audios)
    for start, a in zip(layout.starts, audios):
        np.testing.assert_array_equal(joined[start : start + len(a)], a)


@st.composite
def chunks(draw):
    """A chunk with 1-5 pieces (pauses cut out) at arbitrary millisecond positions."""
    t = draw(st.integers(0, 4_000_000)) / 1000
    pieces = []
    for _ in range(draw(st.integers(1, 5))):
        length = draw(st.integers(50, 12_000)) / 1000
        pieces.append((round(t, 3), round(t + length, 3)))
        t += length + draw(st.integers(1, 20_000)) / 1000
    start, end = pieces[0][0], pieces[-1][1]
    return Chunk(index=0, start=start, end=end, keep_start=start, keep_end=end, pieces=pieces)


@given(chunks(), st.floats(0, 1))
@settings(max_examples=300, deadline=None)
def test_chunk_time_and_clip_time_map_both_ways(chunk, where):
    a, b = chunk.spans()[int(where * (len(chunk.spans()) - 1))]
    clip_t = a + (b - a) * where
    local = chunk.to_local_time(clip_t)
    assert 0 <= local <= chunk.duration + 1e-9
    assert abs(chunk.to_clip_time(local) - clip_t) < 1e-6


@given(chunks())
@settings(max_examples=150, deadline=None)
def test_a_chunk_reads_as_many_samples_as_its_pieces_hold(chunk):
    n = seconds_to_sample(chunk.end) + 10
    audio = ArrayAudio(np.arange(n, dtype=np.float32))
    samples = cut(chunk, audio)
    expected = sum(seconds_to_sample(b) - seconds_to_sample(a) for a, b in chunk.spans())
    assert len(samples) == expected
    # the first sample of every piece is the clip sample at that piece's start
    offset = 0
    for a, b in chunk.spans():
        assert samples[offset] == seconds_to_sample(a)
        offset += seconds_to_sample(b) - seconds_to_sample(a)


@given(chunks(), st.integers(0, 3))
@example(Chunk(index=0, start=0.0, end=0.101, keep_start=0.0, keep_end=0.101, pieces=[(0.0, 0.05), (0.051, 0.101)]), 2)
@settings(max_examples=150, deadline=None)
def test_words_move_from_batch_time_to_clip_time(chunk, piece_index):
    """A word at local time x inside piece i of a batch lands at the clip moment x maps to."""

    class W:
        def __init__(self, start, end):
            self.start, self.end, self.word, self.probability = start, end, " w", 0.9

    offset = BatchLayout([80, 1234, 50]).offset_s(piece_index % 3)
    local = chunk.duration / 2
    (word,) = _owned_words([W(offset + local, offset + local + 0.01)], ChunkAudio(chunk, np.zeros(1)), offset)
    # A moment exactly where a pause was cut out is both the end of one piece and the start of the next:
    # either clip time is right (hypothesis found 0.05 s into pieces (0, 0.05), (0.051, 0.101)).
    allowed = [chunk.to_clip_time(local)]
    done = 0.0
    for (start, end), (next_start, _) in zip(chunk.spans(), chunk.spans()[1:]):
        done += end - start
        if abs(local - done) <= 0.0005 + 1e-9:
            allowed.append(next_start)
    assert min(abs(word.start - t) for t in allowed) <= 0.0005 + 1e-9  # word times are kept to 1 ms


@given(st.integers(0, 50_000), st.integers(0, 50_000))
@settings(max_examples=100, deadline=None)
def test_a_stored_clip_reads_the_same_spans_as_the_array(tmp_path_factory, a, b):
    # samples on the 16-bit grid PCM files are stored on (shared/media/pcm.py): they read back exactly
    samples = (np.random.default_rng(1).integers(-32768, 32768, 40_000) / 32768).astype(np.float32)
    path = tmp_path_factory.mktemp("pcm") / "x.pcm"
    with PcmWriter(path) as w:
        w.write(samples[:12_345])
        w.write(samples[12_345:])
    ref = PcmRef.of(path)
    assert ref.num_samples == len(samples)
    np.testing.assert_array_equal(ref.read(a, b), ArrayAudio(samples).read(a, b))


def test_seconds_to_sample_rounds_instead_of_truncating():
    assert int(1.001 * SAMPLE_RATE) == 16015  # why: truncation drops a sample on ordinary times
    assert seconds_to_sample(1.001) == 16016


def test_a_chunk_of_in_memory_audio_pickles_only_its_own_samples():
    clip = np.arange(60 * SAMPLE_RATE, dtype=np.float32)
    chunk = Chunk(index=0, start=10.0, end=12.0, keep_start=10.0, keep_end=12.0, pieces=[(10.0, 11.0), (11.5, 12.0)])
    item = ChunkAudio(chunk, clip)
    sent = pickle.dumps(item)
    assert len(sent) < 2 * 1.5 * SAMPLE_RATE * 4 + 10_000  # 1.5 s of samples, not the clip's 60 s
    np.testing.assert_array_equal(pickle.loads(sent).samples, item.samples)
