"""The fast decode behind live partials: every open utterance of a batch in one greedy pass."""

from __future__ import annotations

import numpy as np

from shared.core.domain import SAMPLE_RATE, TranscribeOptions, Word
from shared.pipeline.transcriber import BatchLayout, WhisperTranscriber

MIN_AUDIO_S = 0.3  # less than this has no word to show yet


def decode_partials(
    transcriber: WhisperTranscriber, audios: list[np.ndarray], options: TranscribeOptions
) -> list[list[Word]]:
    """Words (seconds into each audio) of every audio, decoded together: one batched forward pass,
    greedy, no re-decoding of what it missed (a partial is a preview; the final decodes properly)."""
    from faster_whisper import BatchedInferencePipeline

    out: list[list[Word]] = [[] for _ in audios]
    heard = [i for i, a in enumerate(audios) if len(a) >= MIN_AUDIO_S * SAMPLE_RATE]
    if not heard:
        return out
    layout = BatchLayout([len(audios[i]) for i in heard])
    language = options.language or (None if transcriber.multilingual else "en")
    segments, _info = BatchedInferencePipeline(transcriber.model).transcribe(
        layout.join([audios[i] for i in heard]),
        language=language,
        task=options.task.value,
        beam_size=1,
        temperature=options.temperature,
        initial_prompt=options.initial_prompt,
        word_timestamps=True,
        vad_filter=False,
        clip_timestamps=layout.clip_timestamps(),
        batch_size=len(heard),
    )
    for seg in segments:
        k = layout.piece_of(seg.seek)
        offset = layout.offset_s(k)
        out[heard[k]] += [
            Word(start=round(max(w.start - offset, 0.0), 3), end=round(max(w.end - offset, 0.0), 3),
                 word=w.word, probability=round(w.probability, 4))
            for w in seg.words or []
        ]
    return out
