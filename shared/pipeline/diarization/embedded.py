"""The embedded diarizer: offline and token-free.

1. Silero VAD finds speech (cut at short pauses, so turns can change there): it starts where Silero is
   as sure as 0.35 and ends only once the score stays under 0.05 (`vad_threshold`,
   `vad_neg_threshold`), so the quiet ends of far-field, reverberant and band-limited utterances keep
   their speaker without the low-scoring noise and reverberation between them founding new ones.
   Chosen on the eval's same-channel tune half among 0.35/0.2 (the old default), 0.35/0.05, 0.25/0.1,
   0.25/0.05 and 0.15/0.05; on the seven real recordings, reference speech outside every region fell
   from 24.5 s to 9.0 s of 204 s.
2. resemblyzer embeds overlapping 1.6 s windows of speech (a d-vector per window), each window brought
   to -30 dBFS (resemblyzer's mel is power, not log: its embeddings move with the level, and a region
   joined across a short pause may run from a quiet stretch into a loud one). With 1. this took the
   same-channel tune half from DER 18.8 % to 15.5 %, the conversations' tune half from 5.1 % to 4.7 %
   and the real recordings from 21.3 % to 19.6 % (docs/accuracy.md has the check halves).
3. Speakers are counted and clustered on segments, the mean of up to `segment_windows` consecutive
   windows of one speech region (shared/pipeline/diarization/clustering.py): average linkage on cosine distance
   up to `distance_threshold`, or cut at exactly `num_speakers`; clusters covering under
   `min_speaker_s` of speech are merged into the most alike one unless they lie `distinct_distance`
   from every other (a voice heard briefly that sounds like nobody else), the count is clamped to
   [min_speakers, max_speakers], and cosine k-means steps on the single windows refine the result.
   Fragments shorter than a window (down to 0.3 s: a backchannel) join the speaker they sound most like.
4. Every 10 ms frame of speech takes the speaker whose centroid best matches the windows covering it;
   a median filter removes flickers shorter than `min_turn_s`.

Memory stays bounded in the recording's length: audio is read one speech region at a time, windows are
embedded as they are cut, clustering sees at most `max_cluster_windows` windows (beyond that, an evenly
spread subset is clustered and every window joins the nearest centroid), and frames are labelled region
by region. The embeddings themselves (1 KB a window) are all that grows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from shared.pipeline.diarization import clustering
from shared.pipeline.diarization.port import speaker_label
from shared.core.domain import SpeakerHints, Turn, VoicePrint
from shared.media.pcm import ArrayAudio, AudioSource, as_audio, read_seconds
from shared.pipeline.vad import Region, SileroVad

FRAME_S = 0.01  # resemblyzer's mel hop
EMBED_BATCH = 64


class EmbeddedDiarizer:
    name = "embedded"

    def __init__(
        self,
        *,
        vad: SileroVad | None = None,
        device: str = "cpu",
        window_s: float = 1.6,
        hop_s: float = 0.4,
        min_pause_ms: int = 250,
        vad_threshold: float = 0.35,
        vad_neg_threshold: float = 0.05,
        distance_threshold: float = 0.27,
        segment_windows: int = 4,
        min_speaker_s: float = 3.0,
        distinct_distance: float = 0.28,
        min_turn_s: float = 0.5,
        max_speakers: int = 8,
        cpu_threads: int | None = 1,
        max_cluster_windows: int = 3000,
        level_dbfs: float | None = -30.0,
    ):
        import torch
        from resemblyzer import VoiceEncoder

        if device == "cpu" and cpu_threads:
            # Diarization runs beside CTranslate2, which already uses every core; torch's own thread pool
            # on top of it oversubscribes the CPU and its spinning threads slow both (3.7 s vs 20 s
            # for 5.5 min of audio, measured). torch serves only this encoder in our processes.
            torch.set_num_threads(cpu_threads)

        self.vad = vad or SileroVad()
        self.encoder = VoiceEncoder(device=device, verbose=False)
        self.window_s = window_s
        self.hop_s = hop_s
        self.min_pause_ms = min_pause_ms
        self.vad_threshold = vad_threshold
        self.vad_neg_threshold = vad_neg_threshold
        self.distance_threshold = distance_threshold
        self.segment_windows = segment_windows
        self.min_speaker_s = min_speaker_s
        self.distinct_distance = distinct_distance
        self.min_turn_s = min_turn_s
        self.max_speakers = max_speakers
        self.max_cluster_windows = max_cluster_windows
        self.level_dbfs = level_dbfs
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "EmbeddedDiarizer":
        return cls(
            vad=SileroVad.from_settings(settings),
            device="cuda" if settings.resolved_device == "cuda" else "cpu",
            distance_threshold=settings.diarizer_threshold,
            cpu_threads=settings.diarizer_threads,
        )

    def diarize(self, audio: AudioSource | np.ndarray, hints: SpeakerHints | None = None) -> list[Turn]:
        hints = hints or SpeakerHints()
        audio = as_audio(audio)
        regions = self.vad.speech_regions(
            audio, min_silence_ms=self.min_pause_ms, threshold=self.vad_threshold, neg_threshold=self.vad_neg_threshold
        )
        if not regions:
            return []
        windows = self._embed_windows(audio, regions)
        if len(windows.embeddings) == 0:
            return []
        labels = self._cluster_windows(windows, hints)
        return self._turns(regions, windows, labels)

    def embed_voice(self, samples: np.ndarray) -> np.ndarray:
        """One voice embedding (unit length) for a stretch of one speaker's speech: the mean of its
        windows' d-vectors, cut and levelled as diarization cuts them (live sessions use this)."""
        audio = ArrayAudio(np.asarray(samples, np.float32))
        windows = self._embed_windows(audio, [Region(0.0, audio.num_samples / 16000)])
        if len(windows.embeddings) == 0:
            return np.zeros(256, np.float32)
        return _normalise(windows.embeddings.mean(axis=0)).astype(np.float32)

    def embed_windows(self, samples: np.ndarray) -> np.ndarray:
        """The d-vector (unit length) of every full window of `samples` starting at 0, hop, 2 hop, ...
        (no tail window: a grid that continues when more audio arrives), each levelled on its own as
        diarization levels them. Live sessions watch an open utterance for a speaker change with these."""
        import torch
        from resemblyzer.audio import wav_to_mel_spectrogram

        win, hop = round(self.window_s / FRAME_S), round(self.hop_s / FRAME_S)
        wav = self._levelled(np.asarray(samples, np.float32))
        if len(wav) < win * round(FRAME_S * 16000):
            return np.zeros((0, 256), np.float32)
        mel = wav_to_mel_spectrogram(wav)
        mels = [self._levelled_mel(mel, wav, s, win) for s in range(0, len(mel) - win + 1, hop)]
        rows = []
        with self._lock, torch.inference_mode():
            for at in range(0, len(mels), EMBED_BATCH):
                x = torch.from_numpy(np.stack(mels[at : at + EMBED_BATCH])).float().to(self.encoder.device)
                rows.append(self.encoder(x).cpu().numpy())
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 256), np.float32)

    def voiceprint(self, audio: AudioSource | np.ndarray, spans: list[tuple[float, float]], *,
                   max_speech_s: float = 60.0, count_voices: bool = False) -> VoicePrint:
        """The voice in some spans of a clip: Silero's speech inside them (at diarization's thresholds),
        cut into windows and levelled as diarization does, the windows' d-vectors averaged. The longest
        spans first, up to `max_speech_s` of speech: enough for a stable mean, and the cost is bounded.
        Fragments shorter than a window count only where there is no full window. `count_voices`: also
        how many speakers diarization finds in those windows (an enrolment sample must hold one)."""
        audio = as_audio(audio)
        regions: list[Region] = []
        speech_s = 0.0
        for start, end in sorted(spans, key=lambda s: s[0] - s[1]):
            if speech_s >= max_speech_s:
                break
            # read no more than the speech still wanted (and some room for pauses): a 10-minute turn
            # must not be read whole for 60 s of voice
            start = max(0.0, start)
            end = min(end, audio.duration, start + 1.5 * (max_speech_s - speech_s) + 1.0)
            if end - start < 0.3:
                continue
            piece = ArrayAudio(read_seconds(audio, start, end))
            found = self.vad.speech_regions(
                piece, min_silence_ms=self.min_pause_ms, threshold=self.vad_threshold,
                neg_threshold=self.vad_neg_threshold,
            )
            for r in found:
                r = Region(start + r.start, min(start + r.end, start + r.start + max_speech_s - speech_s))
                if r.end - r.start > 0:
                    regions.append(r)
                    speech_s += r.end - r.start
        if not regions:
            return VoicePrint(np.zeros(256, np.float32), 0.0)
        regions.sort(key=lambda r: r.start)
        windows = self._embed_windows(audio, regions)
        full = (windows.spans[:, 1] - windows.spans[:, 0]) >= self.window_s - 1e-6
        chosen = windows.embeddings[full] if full.any() else windows.embeddings
        if len(chosen) == 0:
            return VoicePrint(np.zeros(256, np.float32), round(speech_s, 3))
        voices = len(np.unique(self._cluster_windows(windows, SpeakerHints()))) if count_voices else 1
        return VoicePrint(_normalise(chosen.mean(axis=0)).astype(np.float32), round(speech_s, 3), voices)

    # --- 2. embeddings ---
    def _embed_windows(self, audio: AudioSource, regions) -> "Windows":
        """Cut each speech region into overlapping windows (one short fragment for a region shorter
        than a window) and embed them in batches as they are cut, in region order."""
        import torch
        from resemblyzer.audio import wav_to_mel_spectrogram

        win, hop = round(self.window_s / FRAME_S), round(self.hop_s / FRAME_S)
        spans, region_of, rows = [], [], []
        batch: list[np.ndarray] = []
        batch_at: list[int] = []

        def embed(mels: list[np.ndarray]) -> np.ndarray:
            x = torch.from_numpy(np.stack(mels)).float().to(self.encoder.device)
            return self.encoder(x).cpu().numpy()

        with self._lock, torch.inference_mode():
            for r, region in enumerate(regions):
                wav = self._levelled(read_seconds(audio, region.start, region.end))
                mel = wav_to_mel_spectrogram(wav)
                if len(mel) < win:
                    if len(mel) >= 30:  # under 0.3 s there is too little voice to tell anyone apart
                        spans.append((region.start, region.start + len(mel) * FRAME_S))
                        region_of.append(r)
                        rows.append(embed([mel])[0])
                    continue
                starts = list(range(0, len(mel) - win + 1, hop))
                if starts[-1] != len(mel) - win:
                    starts.append(len(mel) - win)  # cover the region's tail too
                for s in starts:
                    spans.append((region.start + s * FRAME_S, region.start + (s + win) * FRAME_S))
                    region_of.append(r)
                    rows.append(None)
                    batch.append(self._levelled_mel(mel, wav, s, win))
                    batch_at.append(len(rows) - 1)
                    if len(batch) == EMBED_BATCH:
                        for i, e in zip(batch_at, embed(batch)):
                            rows[i] = e
                        batch, batch_at = [], []
            if batch:
                for i, e in zip(batch_at, embed(batch)):
                    rows[i] = e
        embeddings = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 256), np.float32)
        return Windows(np.array(spans, dtype=np.float64).reshape(-1, 2), embeddings, np.array(region_of, dtype=int))

    def _levelled(self, wav: np.ndarray) -> np.ndarray:
        """The region at `level_dbfs` RMS: resemblyzer's mel is not logarithmic, so its embeddings move
        with the level, and one voice recorded louder and quieter must not become two speakers."""
        if self.level_dbfs is None:
            return wav
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
        return wav if rms < 1e-5 else (wav * (10 ** (self.level_dbfs / 20) / rms)).astype(np.float32)

    def _levelled_mel(self, mel: np.ndarray, wav: np.ndarray, start: int, frames: int) -> np.ndarray:
        """One window's mel frames, scaled as if the window alone had been levelled: a region that runs
        from a quiet stretch into a loud one (joined across a short pause) would otherwise show the
        encoder the quiet part 20 dB down. The mel is power, so a gain g on the samples is g^2 here."""
        window = mel[start : start + frames]
        if self.level_dbfs is None:
            return window
        hop = round(FRAME_S * 16000)
        samples = wav[start * hop : (start + frames) * hop]
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
        return window if rms < 1e-5 else window * np.float32((10 ** (self.level_dbfs / 20) / rms) ** 2)

    # --- 3. clustering ---
    def _cluster_windows(self, windows: "Windows", hints: SpeakerHints) -> np.ndarray:
        """Cluster the full-length windows; fragments shorter than a window carry too little voice to
        found a speaker, so they join the speaker they sound most like."""
        spans, embeddings = windows.spans, windows.embeddings
        full = (spans[:, 1] - spans[:, 0]) >= self.window_s - 1e-6
        if full.sum() < 2:
            full[:] = True
        labels = np.full(len(embeddings), -1)
        labels[full] = self._cluster_bounded(spans[full], embeddings[full], windows.region_of[full], hints)
        if (~full).any():
            ids = np.unique(labels[full])
            centroids = _normalise(np.stack([embeddings[labels == c].mean(0) for c in ids]))
            labels[~full] = ids[np.argmax(embeddings[~full] @ centroids.T, axis=1)]
        return labels

    def _cluster_bounded(
        self, spans: np.ndarray, embeddings: np.ndarray, region_of: np.ndarray, hints: SpeakerHints
    ) -> np.ndarray:
        """`_cluster` on at most `max_cluster_windows` windows. Average linkage needs n^2/2 distances:
        3000 windows are 36 MB, a 4-hour recording's 36 000 would be 5 GB. Past the cap, every
        step-th window (evenly spread over the recording, single windows grouped into segments as below
        the cap) is clustered, and every window joins the nearest centroid."""
        n = len(embeddings)
        if n <= self.max_cluster_windows:
            return self._cluster(spans, embeddings, region_of, hints)
        step = -(-n // self.max_cluster_windows)
        pick = np.arange(0, n, step)
        # once picked windows no longer overlap, together they cover less speech than all of them
        scale = min(1.0, self.window_s / (step * self.hop_s))
        sampled = self._cluster(
            spans[pick], embeddings[pick], region_of[pick], hints, min_speaker_s=self.min_speaker_s * scale
        )
        ids = np.unique(sampled)
        centroids = _normalise(np.stack([embeddings[pick[sampled == c]].mean(0) for c in ids]))
        return ids[np.argmax(embeddings @ centroids.T, axis=1)]

    def _cluster(
        self,
        spans: np.ndarray,
        embeddings: np.ndarray,
        region_of: np.ndarray,
        hints: SpeakerHints,
        *,
        min_speaker_s: float | None = None,
    ) -> np.ndarray:
        return clustering.cluster(
            spans,
            embeddings,
            region_of,
            num_speakers=hints.num_speakers,
            min_speakers=hints.min_speakers or 1,
            max_speakers=hints.max_speakers or self.max_speakers,
            threshold=self.distance_threshold,
            min_speaker_s=self.min_speaker_s if min_speaker_s is None else min_speaker_s,
            distinct=self.distinct_distance,
            group=self.segment_windows,
        )

    # --- 4. frame labels -> turns ---
    def _turns(self, regions, windows: "Windows", labels: np.ndarray) -> list[Turn]:
        spans, embeddings = windows.spans, windows.embeddings
        ids = np.unique(labels)
        centroids = _normalise(np.stack([embeddings[labels == c].mean(0) for c in ids]))
        scores = embeddings @ centroids.T  # window x speaker
        # order speakers by first appearance, so SPEAKER_00 is whoever talks first
        first = [spans[labels == c, 0].min() for c in ids]
        rank = {int(i): r for r, i in enumerate(np.argsort(first))}
        centres = spans.mean(axis=1)
        bounds = np.searchsorted(windows.region_of, np.arange(len(regions) + 1))  # windows are in region order
        turns: list[Turn] = []
        smooth = max(1, int(self.min_turn_s / FRAME_S)) | 1
        for r, region in enumerate(regions):
            a, b = int(region.start / FRAME_S), int(np.ceil(region.end / FRAME_S))
            if b <= a:
                continue
            seg = np.zeros((b - a, len(ids)))
            cover = np.zeros(b - a)
            for w in range(bounds[r], bounds[r + 1]):
                s, e = int(spans[w, 0] / FRAME_S) - a, int(np.ceil(spans[w, 1] / FRAME_S)) - a
                seg[max(s, 0) : e] += scores[w]
                cover[max(s, 0) : e] += 1
            uncovered = cover == 0
            if uncovered.all():
                # a blip too short to embed: borrow the nearest embedded neighbour's voice
                centre = (region.start + region.end) / 2
                j = int(np.searchsorted(centres, centre))
                near = [i for i in (j - 1, j) if 0 <= i < len(centres)]
                seg[:] = scores[min(near, key=lambda i: abs(centres[i] - centre))]
            elif uncovered.any():
                idx = np.where(~uncovered)[0]
                seg[uncovered] = seg[idx[np.abs(idx[:, None] - np.where(uncovered)[0]).argmin(axis=0)]]
            frame_labels = median_filter(np.argmax(seg, axis=1), size=min(smooth, len(seg)) | 1, mode="nearest")
            change = np.flatnonzero(np.diff(frame_labels)) + 1
            for s, e in zip(np.r_[0, change], np.r_[change, len(frame_labels)]):
                turns.append(
                    Turn(
                        start=round(region.start + s * FRAME_S, 3),
                        end=round(min(region.start + e * FRAME_S, region.end), 3),
                        speaker=speaker_label(rank[int(frame_labels[s])]),
                    )
                )
        return _merge_adjacent(turns)


@dataclass(frozen=True)
class Windows:
    """The embedded windows of one recording, in time order: [start, end] seconds, d-vector, and the
    index of the speech region each lies in."""

    spans: np.ndarray
    embeddings: np.ndarray
    region_of: np.ndarray


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def _merge_adjacent(turns: list[Turn], gap_s: float = 0.0) -> list[Turn]:
    merged: list[Turn] = []
    for turn in sorted(turns, key=lambda t: t.start):
        if merged and merged[-1].speaker == turn.speaker and turn.start - merged[-1].end <= gap_s:
            merged[-1] = Turn(start=merged[-1].start, end=turn.end, speaker=turn.speaker)
        else:
            merged.append(turn)
    return merged
