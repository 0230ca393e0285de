"""The embedded diarizer: offline and token-free.

1. Silero VAD finds speech (cut at short pauses, so turns can change there).
2. resemblyzer embeds overlapping 1.6 s windows of speech (a d-vector per window).
3. Agglomerative clustering (cosine, average linkage) groups the full-length windows into speakers: with
   a known count when hinted, else up to a distance threshold; clusters covering under `min_speaker_s`
   of speech are folded into the nearest one, and the count is clamped to [min_speakers, max_speakers].
   Fragments shorter than a window join the speaker they sound most like.
4. Every 10 ms frame of speech takes the speaker whose centroid best matches the windows covering it;
   a median filter removes flickers shorter than `min_turn_s`.
"""

from __future__ import annotations

import threading

import numpy as np
from scipy.ndimage import median_filter

from shared.diarization import speaker_label
from shared.domain import SAMPLE_RATE, SpeakerHints, Turn
from shared.vad import SileroVad

FRAME_S = 0.01  # resemblyzer's mel hop


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
        distance_threshold: float = 0.45,
        min_speaker_s: float = 2.0,
        min_turn_s: float = 0.5,
        max_speakers: int = 8,
        cpu_threads: int | None = 1,
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
        self.distance_threshold = distance_threshold
        self.min_speaker_s = min_speaker_s
        self.min_turn_s = min_turn_s
        self.max_speakers = max_speakers
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "EmbeddedDiarizer":
        return cls(
            vad=SileroVad.from_settings(settings),
            device="cuda" if settings.resolved_device == "cuda" else "cpu",
            distance_threshold=settings.diarizer_threshold,
            cpu_threads=settings.diarizer_threads,
        )

    def diarize(self, samples: np.ndarray, hints: SpeakerHints | None = None) -> list[Turn]:
        hints = hints or SpeakerHints()
        regions = self.vad.speech_regions(samples, min_silence_ms=self.min_pause_ms)
        if not regions:
            return []
        spans, embeddings = self._embed_windows(samples, regions)
        if len(embeddings) == 0:
            return []
        labels = self._cluster_windows(spans, embeddings, hints)
        return self._turns(regions, spans, embeddings, labels)

    # --- 2. embeddings ---
    def _embed_windows(self, samples: np.ndarray, regions) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from resemblyzer.audio import wav_to_mel_spectrogram

        win, hop = round(self.window_s / FRAME_S), round(self.hop_s / FRAME_S)
        full, short, spans_full, spans_short = [], [], [], []
        for region in regions:
            a, b = int(region.start * SAMPLE_RATE), int(region.end * SAMPLE_RATE)
            mel = wav_to_mel_spectrogram(samples[a:b])
            if len(mel) < win:
                if len(mel) >= 30:  # under 0.3 s there is too little voice to tell anyone apart
                    short.append(mel)
                    spans_short.append((region.start, region.start + len(mel) * FRAME_S))
                continue
            starts = list(range(0, len(mel) - win + 1, hop))
            if starts[-1] != len(mel) - win:
                starts.append(len(mel) - win)  # cover the region's tail too
            for s in starts:
                full.append(mel[s : s + win])
                spans_full.append((region.start + s * FRAME_S, region.start + (s + win) * FRAME_S))
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(full), 64):
                batch = torch.from_numpy(np.stack(full[i : i + 64])).float().to(self.encoder.device)
                out.append(self.encoder(batch).cpu().numpy())
            for mel in short:
                out.append(self.encoder(torch.from_numpy(mel[None]).float().to(self.encoder.device)).cpu().numpy())
        spans = np.array(spans_full + spans_short, dtype=np.float64).reshape(-1, 2)
        embeddings = np.concatenate(out) if out else np.zeros((0, 256), np.float32)
        return spans, embeddings

    # --- 3. clustering ---
    def _cluster_windows(self, spans: np.ndarray, embeddings: np.ndarray, hints: SpeakerHints) -> np.ndarray:
        """Cluster the full-length windows; fragments shorter than a window carry too little voice to
        found a speaker, so they join the speaker they sound most like."""
        full = (spans[:, 1] - spans[:, 0]) >= self.window_s - 1e-6
        if full.sum() < 2:
            full[:] = True
        labels = np.full(len(embeddings), -1)
        labels[full] = self._cluster(spans[full], embeddings[full], hints)
        if (~full).any():
            ids = np.unique(labels[full])
            centroids = _normalise(np.stack([embeddings[labels == c].mean(0) for c in ids]))
            labels[~full] = ids[np.argmax(embeddings[~full] @ centroids.T, axis=1)]
        return labels

    def _cluster(self, spans: np.ndarray, embeddings: np.ndarray, hints: SpeakerHints) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering

        n = len(embeddings)
        lo = hints.num_speakers or hints.min_speakers or 1
        hi = hints.num_speakers or hints.max_speakers or self.max_speakers
        if n < 2 or hi == 1:
            return np.zeros(n, dtype=int)
        if hints.num_speakers:
            k = min(hints.num_speakers, n)
            return AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(embeddings)
        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=self.distance_threshold
        ).fit_predict(embeddings)
        labels = self._fold_small(spans, embeddings, labels)
        k = len(np.unique(labels))
        if k > hi or k < lo:
            k = min(max(k, lo), hi, n)
            labels = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(embeddings)
        return labels

    def _fold_small(self, spans: np.ndarray, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Give the windows of clusters covering under `min_speaker_s` of speech to the nearest big one."""
        labels = labels.copy()
        ids = np.unique(labels)
        covered = np.array([_covered_seconds(spans[labels == c]) for c in ids])
        big = ids[covered >= self.min_speaker_s]
        if len(big) == 0:
            return np.zeros_like(labels)
        centroids = _normalise(np.stack([embeddings[labels == c].mean(0) for c in big]))
        for c in ids[covered < self.min_speaker_s]:
            members = labels == c
            labels[members] = big[np.argmax(embeddings[members] @ centroids.T, axis=1)]
        return labels

    # --- 4. frame labels -> turns ---
    def _turns(self, regions, spans: np.ndarray, embeddings: np.ndarray, labels: np.ndarray) -> list[Turn]:
        ids = np.unique(labels)
        centroids = _normalise(np.stack([embeddings[labels == c].mean(0) for c in ids]))
        scores = embeddings @ centroids.T  # window x speaker
        # order speakers by first appearance, so SPEAKER_00 is whoever talks first
        first = [spans[labels == c, 0].min() for c in ids]
        rank = {int(i): r for r, i in enumerate(np.argsort(first))}
        end = max(r.end for r in regions)
        n_frames = int(np.ceil(end / FRAME_S)) + 1
        acc = np.zeros((n_frames, len(ids)))
        cover = np.zeros(n_frames)
        for (s, e), sc in zip(spans, scores):
            a, b = int(s / FRAME_S), int(np.ceil(e / FRAME_S))
            acc[a:b] += sc
            cover[a:b] += 1
        turns: list[Turn] = []
        smooth = max(1, int(self.min_turn_s / FRAME_S)) | 1
        for region in regions:
            a, b = int(region.start / FRAME_S), int(np.ceil(region.end / FRAME_S))
            if b <= a:
                continue
            seg = acc[a:b].copy()
            uncovered = cover[a:b] == 0
            if uncovered.all():
                # a blip too short to embed: borrow the nearest embedded neighbour's voice
                centre = (region.start + region.end) / 2
                nearest = int(np.argmin(np.abs(spans.mean(axis=1) - centre)))
                seg[:] = scores[nearest]
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


def _covered_seconds(spans: np.ndarray) -> float:
    """Length of the union of [start, end] spans."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(map(tuple, spans)):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


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
