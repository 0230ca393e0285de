"""VAD chunking: cuts in silences, chunks <= max length, overlaps, and no word lost or doubled at a cut."""

from __future__ import annotations

import numpy as np
import pytest
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, load_reference
from scoring import wer, words_of

from shared.core.domain import Chunk, TranscribeOptions

from shared.media.pcm import ChunkAudio, cut
from shared.pipeline.transcriber import _owned_words, join_words
from shared.pipeline.vad import Region, SileroVad, plan_chunks


def test_plan_chunks_cuts_in_the_middle_of_gaps_and_tiles_the_clip():
    regions = [Region(1.0, 9.0), Region(10.0, 20.0), Region(22.0, 35.0), Region(36.0, 40.0)]
    chunks = plan_chunks(regions, 41.0, max_chunk_s=30.0, overlap_s=0.2)
    assert [c.index for c in chunks] == [0, 1]
    assert chunks[0].keep_start == 0.0 and chunks[-1].keep_end == 41.0
    assert chunks[0].keep_end == chunks[1].keep_start == 21.0  # middle of the 20-22 s silence
    assert all(c.end - c.start <= 30.0 for c in chunks)
    assert chunks[0].start == pytest.approx(0.8) and chunks[1].end == pytest.approx(40.2)
    # pauses over MAX_PAUSE_S inside a chunk are shortened: Whisper hears speech, not silence
    assert chunks[0].pieces == [(0.8, 9.2), (9.8, 20.2)]
    assert chunks[0].duration == pytest.approx(18.8)


def test_long_pauses_do_not_cost_chunks():
    # 12 turns of 4 s with 1.5 s pauses: 64 s of clip, 48 s of speech; silence kept whole would need 3
    regions = [Region(i * 5.5, i * 5.5 + 4.0) for i in range(12)]
    chunks = plan_chunks(regions, 66.0, max_chunk_s=30.0, overlap_s=0.2)
    assert len(chunks) == 2 and all(c.duration <= 30.0 for c in chunks)
    assert all(c.end - c.start > 30.0 for c in chunks)  # each spans more clip than it holds audio


def test_chunk_time_maps_across_cut_out_pauses():
    chunk = Chunk(index=0, start=1.0, end=9.0, keep_start=0.0, keep_end=10.0, pieces=[(1.0, 3.0), (6.0, 9.0)])
    samples = np.arange(10 * 16000, dtype=np.float32)
    audio = cut(chunk, samples)
    assert len(audio) == 5 * 16000 and audio[2 * 16000] == 6 * 16000  # 2 s in = 6 s into the clip
    assert chunk.to_clip_time(0.5) == 1.5 and chunk.to_clip_time(2.5) == 6.5 and chunk.to_clip_time(99) == 9.0
    assert chunk.to_local_time(6.5) == 2.5 and chunk.to_local_time(4.0) == 2.0  # a cut-out moment
    rest = chunk.starting_at(7.0)
    assert rest.spans() == [(7.0, 9.0)] and rest.start == 7.0 and rest.keep_start == 0.0


def test_forced_cut_overlaps_by_overlap_s():
    regions = [Region(0.0, 14.0), Region(14.0, 25.0)]  # one long stretch, already split at 14 s
    a, b = plan_chunks(regions, 25.0, max_chunk_s=15.0, overlap_s=0.2)
    assert a.keep_end == b.keep_start == 14.0
    assert a.end - b.start == pytest.approx(0.2)


def test_a_word_heard_by_both_neighbours_is_kept_once():
    class W:  # the shape of faster-whisper's Word
        def __init__(self, start, end, word):
            self.start, self.end, self.word, self.probability = start, end, word, 0.9

    first = Chunk(index=0, start=0.0, end=10.1, keep_start=0.0, keep_end=10.0)
    second = Chunk(index=1, start=9.9, end=20.0, keep_start=10.0, keep_end=20.0)

    def joined(words_first, words_second):
        a = _owned_words(words_first, ChunkAudio(first, np.zeros(1)))
        b = _owned_words(words_second, ChunkAudio(second, np.zeros(1)))  # times local to each chunk
        return [(w.word, w.start) for w in join_words(a, b)]

    # the same spoken word, truncated differently by each chunk
    assert joined([W(9.0, 9.7, " well"), W(9.8, 10.1, " yes")], [W(0.0, 0.2, " yes"), W(0.4, 0.8, " so")]) == [
        (" well", 9.0), (" yes", 9.8), (" so", 10.3)]
    # a word starting just after the cut, heard truncated at the end of the first chunk
    assert joined([W(10.05, 10.1, " no")], [W(0.15, 0.5, " no")]) == [(" no", 10.05)]
    # the aligner pins the next chunk's first word to its first sample, before the cut: still kept
    assert joined([W(9.0, 9.5, " end.")], [W(0.0, 0.6, " Unless")]) == [(" end.", 9.0), (" Unless", 9.9)]


@pytest.mark.slow
def test_real_chunks_respect_the_limits(worker):
    samples = load_audio(TWO_SPEAKERS)
    ref = load_reference(TWO_SPEAKERS)
    chunks = SileroVad(max_chunk_s=8.0).split(samples)
    assert len(chunks) > 1
    assert all(c.duration <= 8.0 + 1e-6 for c in chunks)  # the audio Whisper hears
    for c in chunks:  # what a chunk cuts out of its span is silence
        assert all(_is_silent(samples, a[1], b[0]) for a, b in zip(c.spans(), c.spans()[1:]))
    assert chunks[0].keep_start == 0 and chunks[-1].keep_end == pytest.approx(ref["duration"], abs=0.01)
    for a, b in zip(chunks, chunks[1:]):
        assert a.keep_end == b.keep_start
        assert b.start - a.end <= 1e-6 or _is_silent(samples, a.end, b.start)


def _is_silent(samples: np.ndarray, start: float, end: float) -> bool:
    piece = samples[int(start * 16000) : int(end * 16000)]
    return piece.size == 0 or float(np.sqrt(np.mean(piece**2))) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("max_chunk_s", [8.0, 12.0])
def test_no_word_lost_or_doubled_at_forced_cuts(worker, max_chunk_s):
    """The one-speaker fixture has no 600 ms pause, so these limits force cuts inside speech."""
    samples = load_audio(ONE_SPEAKER)
    ref = load_reference(ONE_SPEAKER)["text"]

    def text_with(vad: SileroVad) -> str:
        chunks = vad.split(samples)
        batch = [ChunkAudio(c, samples) for c in chunks]
        results = worker.transcriber.transcribe_batch(batch, TranscribeOptions())
        return " ".join(s.text for r in results for s in r.segments), chunks

    whole, _ = text_with(SileroVad(max_chunk_s=30.0))
    cut, chunks = text_with(SileroVad(max_chunk_s=max_chunk_s))
    assert any(b.start < a.end for a, b in zip(chunks, chunks[1:])), "expected forced (overlapping) cuts"
    assert len(words_of(cut)) == pytest.approx(len(words_of(whole)), abs=1)
    assert wer(ref, cut) <= wer(ref, whole) + 0.05


@pytest.mark.slow
@pytest.mark.parametrize("min_silence_ms", [600, 250, 100])
def test_streamed_vad_finds_the_regions_of_faster_whispers_whole_clip_call(min_silence_ms):
    """Scored 320 s at a time with the LSTM and high-pass states carried across, the VAD must find exactly
    what faster-whisper's one call over the whole (high-passed) clip finds (11.5 minutes: two block edges)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps
    from scipy.signal import sosfilt

    from shared.pipeline.silero import HIGHPASS_SOS

    two, one = load_audio(TWO_SPEAKERS), load_audio(ONE_SPEAKER)
    clip = np.concatenate([two, np.zeros(3 * 16000, np.float32), one * 0.3] * 13)
    assert len(clip) > 2 * 320 * 16000
    options = VadOptions(threshold=0.5, min_speech_duration_ms=250, min_silence_duration_ms=min_silence_ms,
                         speech_pad_ms=30)
    heard = sosfilt(HIGHPASS_SOS, clip).astype(np.float32)
    whole = [(r["start"] / 16000, r["end"] / 16000) for r in get_speech_timestamps(heard, options)]
    streamed = [(r.start, r.end) for r in SileroVad().speech_regions(clip, min_silence_ms=min_silence_ms)]
    assert streamed == whole
