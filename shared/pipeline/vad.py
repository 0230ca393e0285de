"""Silero VAD: find speech, then cut the clip into chunks Whisper can take (<= 30 s).

Cuts fall in silences longer than `min_silence_ms`. A stretch of speech longer than a chunk with no such
silence is cut in its widest shorter pause, or at its quietest moment when it has none. Every chunk owns [keep_start, keep_end), the span between
two cut points, and its audio reaches `overlap_s / 2` past each cut, so neighbours overlap by `overlap_s`
and a word heard by both is kept once (see shared/pipeline/transcriber.py).

Chunking reads Silero's probabilities at lower thresholds than its usual 0.5 (`split_threshold`), and
takes a second look at what is still "silence": VAD chooses where to cut, not alone what is speech.
Stretches LOUD_DB over the clip's noise floor that Silero rejects (a tinny, muffled or distant voice can
score under 0.1 a few dB over the pauses) are handed to Whisper too, batched with the rest and marked
on their chunk (`Chunk.unsure`); Whisper's own evidence decides what of them is speech
(shared/pipeline/transcriber.py). Silero's scores come from shared/pipeline/silero.py. `speech_regions()` defaults to Silero's
0.5; the embedded diarizer passes its own 0.35 / 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.core.domain import SAMPLE_RATE, Chunk
from shared.media.pcm import AudioSource, as_audio, read_seconds, seconds_to_sample
from shared.pipeline.silero import WINDOW, clip_probabilities, window_blocks

SPEECH_PAD_S = 0.2  # audio kept around detected speech, so soft word edges are not clipped
FINE_SILENCE_MS = 100  # pauses looked for when speech runs on longer than a chunk
MAX_PAUSE_S = 0.4  # a longer pause inside a chunk is shortened to this (its middle is cut out)
LOUD_DB = 6.0  # second look: a window this far above the clip's noise floor carries sound ...
LOUD_MIN_DB = -60.0  # ... (and at least this loud, dBFS)
LOUD_MIN_S = 0.5  # a stretch of such windows this long inside a VAD "silence" is handed to Whisper too
LOUD_BRIDGE_S = 0.5  # quieter dips shorter than this (between syllables, words) do not end a stretch


@dataclass(frozen=True)
class Region:
    start: float
    end: float


class SileroVad:
    """Silero VAD v6, through faster-whisper's batched ONNX runner (the model ships in its wheel).

    The runner scores the whole clip in one batched call instead of one call per 32 ms window, needs
    no torch, and keeps no state between calls, so one instance serves every thread.
    """

    def __init__(
        self,
        *,
        min_silence_ms: int = 600,
        max_chunk_s: float = 30.0,
        overlap_s: float = 0.2,
        threshold: float = 0.5,
        min_speech_ms: int = 250,
        split_threshold: float = 0.15,
        split_neg_threshold: float = 0.05,
        second_look: bool = True,
    ):
        from faster_whisper.vad import get_vad_model

        self.min_silence_ms = min_silence_ms
        self.max_chunk_s = max_chunk_s
        self.overlap_s = overlap_s
        self.threshold = threshold
        self.min_speech_ms = min_speech_ms
        self.split_threshold = split_threshold
        self.split_neg_threshold = split_neg_threshold
        self.second_look = second_look
        get_vad_model()  # load the ONNX session now (it is cached per process), not on the first request

    @classmethod
    def from_settings(cls, settings) -> "SileroVad":
        return cls(
            min_silence_ms=settings.min_silence_ms,
            max_chunk_s=settings.max_chunk_s,
            overlap_s=settings.chunk_overlap_s,
            split_threshold=settings.vad_split_threshold,
            split_neg_threshold=settings.vad_split_neg_threshold,
        )

    def speech_probabilities(self, audio: AudioSource | np.ndarray) -> np.ndarray:
        """Silero's speech probability for every 32 ms window, read and scored block by block.

        The same computation as faster-whisper's whole-clip call (windows with their 64-sample context,
        LSTM state carried from one batch of 10 000 windows to the next), but only one block of audio
        is in memory at a time: a 4-hour clip needs 20 MB here instead of two copies of itself.
        """
        audio = as_audio(audio)
        return clip_probabilities(audio)

    def speech_regions(
        self,
        audio: AudioSource | np.ndarray,
        *,
        min_silence_ms: int | None = None,
        probs: np.ndarray | None = None,
        threshold: float | None = None,
        neg_threshold: float | None = None,
    ) -> list[Region]:
        """Stretches of speech, merged across silences shorter than `min_silence_ms`. Pass `probs`
        (from `speech_probabilities`) to look at the same clip at several settings. `threshold` (default
        the instance's, 0.5) starts speech; it ends under `neg_threshold` (default threshold - 0.15)."""
        audio = as_audio(audio)
        if audio.num_samples < SAMPLE_RATE // 10:
            return []
        if probs is None:
            probs = self.speech_probabilities(audio)
        silence = min_silence_ms if min_silence_ms is not None else self.min_silence_ms
        return hysteresis_regions(
            probs,
            audio.num_samples,
            threshold=self.threshold if threshold is None else threshold,
            neg_threshold=neg_threshold,
            min_speech_samples=SAMPLE_RATE * self.min_speech_ms / 1000,
            min_silence_samples=SAMPLE_RATE * silence / 1000,
            pad_samples=SAMPLE_RATE * 30 / 1000,
        )

    def split(self, audio: AudioSource | np.ndarray) -> list[Chunk]:
        audio = as_audio(audio)
        if audio.num_samples < SAMPLE_RATE // 10:
            return []
        probs = self.speech_probabilities(audio)
        regions = self._chunk_regions(audio, probs=probs)
        unsure = loud_regions(window_levels(audio), regions) if self.second_look else []
        regions = self._split_long(audio, _union(regions, unsure), probs)
        return plan_chunks(regions, audio.duration, max_chunk_s=self.max_chunk_s, overlap_s=self.overlap_s,
                           unsure=unsure)

    def _chunk_regions(self, audio: AudioSource, **kwargs) -> list[Region]:
        """Speech as chunking sees it: at the lower split thresholds, so quiet, distant or reverberant
        speech reaches Whisper (which drops what it judges silence: see shared/pipeline/transcriber.py)."""
        return self.speech_regions(audio, threshold=self.split_threshold, neg_threshold=self.split_neg_threshold,
                                   **kwargs)

    def _split_long(self, audio: AudioSource, regions: list[Region], probs: np.ndarray) -> list[Region]:
        """Cut speech longer than a chunk can hold, in its widest short pause (Silero at a finer
        silence setting), or at its quietest moment when it has none."""
        limit = self.max_chunk_s - 2 * SPEECH_PAD_S
        if all(r.end - r.start <= limit for r in regions):
            return regions
        fine = self._chunk_regions(audio, min_silence_ms=FINE_SILENCE_MS, probs=probs)
        pauses = [(a.end, b.start) for a, b in zip(fine, fine[1:])]
        out: list[Region] = []
        for region in regions:
            start = region.start
            while region.end - start > limit:
                lo, hi = start + limit / 2, start + limit
                inside = [(b - a, (a + b) / 2) for a, b in pauses if lo <= (a + b) / 2 <= hi]
                cut = max(inside)[1] if inside else quietest_point(audio, lo, hi)
                out.append(Region(start, cut))
                start = cut
            out.append(Region(start, region.end))
        return out


def hysteresis_regions(
    probs: np.ndarray,
    num_samples: int,
    *,
    threshold: float,
    min_speech_samples: float,
    min_silence_samples: float,
    pad_samples: float,
    neg_threshold: float | None = None,
) -> list[Region]:
    """Silero's rule for turning window probabilities into speech: speech starts at a window scoring
    >= threshold and ends once the score stays under `neg_threshold` (Silero: threshold - 0.15) for
    `min_silence_samples`; stretches shorter than `min_speech_samples` are dropped, the rest padded by
    `pad_samples` (half the gap each, where two are closer than twice that)."""
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    speeches: list[list[float]] = []
    start: int | None = None
    silent_since = 0
    for i, p in enumerate(probs.tolist()):
        at = WINDOW * i
        if start is None:
            if p >= threshold:
                start, silent_since = at, 0
            continue
        if p >= threshold:
            silent_since = 0
        elif p < neg_threshold:
            if not silent_since:
                silent_since = at
            if at - silent_since >= min_silence_samples:
                if silent_since - start > min_speech_samples:
                    speeches.append([start, silent_since])
                start, silent_since = None, 0
    if start is not None and num_samples - start > min_speech_samples:
        speeches.append([start, num_samples])
    for i, speech in enumerate(speeches):
        if i == 0:
            speech[0] = int(max(0, speech[0] - pad_samples))
        if i < len(speeches) - 1:
            gap = speeches[i + 1][0] - speech[1]
            if gap < 2 * pad_samples:
                speech[1] += int(gap // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - gap // 2))
            else:
                speech[1] = int(min(num_samples, speech[1] + pad_samples))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad_samples))
        else:
            speech[1] = int(min(num_samples, speech[1] + pad_samples))
    return [Region(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in speeches]


def window_levels(audio: AudioSource | np.ndarray) -> np.ndarray:
    """RMS level (dBFS) of every 32 ms window Silero scores, read block by block."""
    out = []
    for windows in window_blocks(as_audio(audio)):
        power = np.square(windows, dtype=np.float64).mean(axis=1)
        out.append((10 * np.log10(power + 1e-12)).astype(np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def loud_regions(levels: np.ndarray, speech: list[Region]) -> list[Region]:
    """A second look at Silero's silences: stretches of at least LOUD_MIN_S outside `speech` whose level
    stays LOUD_DB above the clip's noise floor (its 10th-percentile window), across dips shorter than
    LOUD_BRIDGE_S. Distant, muffled, tinny or reverberant speech can score under 0.1 with Silero and
    still be plainly there, a few dB over the pauses; Whisper decides what it is (words heard only
    there need Whisper's own confidence: shared/pipeline/transcriber.py)."""
    if len(levels) == 0:
        return []
    levels = np.maximum(levels, -100.0)
    floor = float(np.percentile(levels, 10))
    loud = levels >= max(floor + LOUD_DB, LOUD_MIN_DB)
    step = WINDOW / SAMPLE_RATE
    for r in speech:
        loud[int(r.start / step) : int(np.ceil(r.end / step))] = False
    out, start = [], None
    bridge = int(LOUD_BRIDGE_S / step)
    quiet_run = 0
    for i, is_loud in enumerate(np.append(loud, False).tolist()):
        if is_loud:
            start = i if start is None else start
            quiet_run = 0
        elif start is not None:
            quiet_run += 1
            if quiet_run > bridge or i == len(loud):
                end = i - quiet_run + 1
                if (end - start) * step >= LOUD_MIN_S:
                    out.append(Region(max(0.0, (start - 1) * step), min(len(levels) * step, (end + 1) * step)))
                start, quiet_run = None, 0
    return out


def _union(a: list[Region], b: list[Region]) -> list[Region]:
    out: list[Region] = []
    for r in sorted([*a, *b], key=lambda r: r.start):
        if out and r.start <= out[-1].end:
            out[-1] = Region(out[-1].start, max(out[-1].end, r.end))
        else:
            out.append(r)
    return out


def quietest_point(audio: AudioSource | np.ndarray, lo: float, hi: float, frame_s: float = 0.05) -> float:
    """The centre of the lowest-energy frame in [lo, hi] (seconds)."""
    frame = int(frame_s * SAMPLE_RATE)
    a = seconds_to_sample(lo)
    window = read_seconds(as_audio(audio), lo, hi)
    n = len(window) // frame
    if n == 0:
        return hi
    energy = np.square(window[: n * frame].reshape(n, frame)).mean(axis=1)
    return (a + (int(np.argmin(energy)) + 0.5) * frame) / SAMPLE_RATE


def plan_chunks(regions: list[Region], duration: float, *, max_chunk_s: float, overlap_s: float,
                unsure: list[Region] = ()) -> list[Chunk]:
    """Pack speech regions greedily into chunks of at most `max_chunk_s` seconds of audio.

    Inside a chunk, a pause longer than MAX_PAUSE_S is shortened to MAX_PAUSE_S by cutting out its
    middle: Whisper's 30 s windows then hold speech, not silence, so fewer chunks cover the clip.
    `unsure` (the second look's regions: sound the VAD scored as silence) is noted on each chunk it
    falls in (Chunk.unsure).
    """
    groups: list[list[Region]] = []
    for region in regions:
        if groups and _heard_length([*groups[-1], region]) <= max_chunk_s:
            groups[-1].append(region)
        else:
            groups.append([region])
    # cut points: the middle of the gap between two groups (zero-width gap for a forced cut)
    cuts = [(a[-1].end + b[0].start) / 2 for a, b in zip(groups, groups[1:])]
    bounds = [0.0, *cuts, duration]
    half = overlap_s / 2
    chunks = []
    for i, group in enumerate(groups):
        keep_start, keep_end = bounds[i], bounds[i + 1]
        start = max(0.0, keep_start - half, group[0].start - SPEECH_PAD_S)
        end = min(duration, keep_end + half, group[-1].end + SPEECH_PAD_S)
        chunks.append(Chunk(index=i, start=round(start, 3), end=round(end, 3),
                            keep_start=round(keep_start, 3), keep_end=round(keep_end, 3),
                            speech=[(round(r.start, 3), round(r.end, 3)) for r in group],
                            pieces=_pieces(group, start, end),
                            unsure=[(round(max(r.start, start), 3), round(min(r.end, end), 3))
                                    for r in unsure if r.end > start and r.start < end]))
    return chunks


def _heard_length(group: list[Region]) -> float:
    speech = sum(r.end - r.start for r in group)
    pauses = sum(min(b.start - a.end, MAX_PAUSE_S) for a, b in zip(group, group[1:]))
    return speech + pauses + 2 * SPEECH_PAD_S


def _pieces(group: list[Region], start: float, end: float) -> list[tuple[float, float]]:
    pieces, piece_start = [], start
    for a, b in zip(group, group[1:]):
        if b.start - a.end > MAX_PAUSE_S:
            pieces.append((piece_start, a.end + MAX_PAUSE_S / 2))
            piece_start = b.start - MAX_PAUSE_S / 2
    pieces.append((piece_start, end))
    return [(round(a, 3), round(b, 3)) for a, b in pieces]
