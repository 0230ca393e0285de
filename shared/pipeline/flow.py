"""The flow, on one page.

    audio --vad_split--> chunks --transcribe (batches, fanned out by the runner)--> words
    audio --diarize (started first, runs while transcription goes on)--> speaker turns
    turns --voiceprints, matched to known voices (when asked)--> turns named "Alice"
    words + turns --assign--> segments, emitted in time order as soon as they are final

`audio` is a reference (shared/media/pcm.py): stages read the spans they need from the stored PCM file, so
nothing here holds the recording's samples. The pipeline only talks to a Runner; where the stages run
(threads here, local worker processes, Modal containers) is the runner's business.

A run stops when nobody waits for it: its CancelToken (shared/pipeline/cancel.py) is checked between
stages and between transcription batches, and each wait on a stage ends when the token is cancelled,
raising Cancelled; the stage calls it had queued are cancelled. Its holders: the synchronous routes
(a client gone), the job executor (a cancelled job, a stopping server).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import numpy as np

from shared.core.config import auto_batch_size
from shared.core.domain import Segment, TranscribeOptions, Transcript, Turn, Word
from shared.media.pcm import AudioSource, ChunkAudio, as_audio
from shared.pipeline.assign import TurnIndex, build_segments
from shared.pipeline.cancel import CancelToken
from shared.pipeline.identify import Identity, KnownVoice, identify
from shared.pipeline.runner import Runner
from shared.pipeline.stages import Stages
from shared.pipeline.transcriber import join_words

UNDETERMINED = "und"  # ISO 639-2 "undetermined": no speech to tell the language from

ProgressCallback = Callable[[float, float], None]  # (audio seconds done, total seconds)


class PipelineRun:
    """One transcription in flight: iterate it for final segments, then read language and speakers."""

    def __init__(
        self,
        audio: AudioSource | np.ndarray,
        options: TranscribeOptions,
        runner: Runner,
        *,
        batch_size: int = auto_batch_size("cuda"),
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        known: list[KnownVoice] | None = None,
        match_threshold: float = 0.0,
    ):
        self.audio = as_audio(audio)
        self.options = options
        self.runner = runner
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.cancel = cancel or CancelToken()  # nobody else holds a default token: never cancelled
        self.duration = self.audio.duration
        self.language: str = options.language or UNDETERMINED
        self.speakers: list[str] = []
        self.known = known or []  # voices to name speakers with (shared/pipeline/identify.py)
        self.match_threshold = match_threshold
        self.identities: dict[str, Identity] = {}

    def __iter__(self) -> Iterator[Segment]:
        wait = self.cancel.wait  # a stage's result, or Cancelled as soon as the run is cancelled
        self.cancel.check()
        diarization: Future[list[Turn]] | None = None
        if self.options.diarize:
            diarization = self.runner.submit(Stages.diarize, self.audio, self.options.speakers)
        try:
            chunks = wait(self.runner.submit(Stages.vad_split, self.audio))
            options = self.options
            if chunks and options.language is None:
                first = ChunkAudio(chunks[0], self.audio)
                options = options.model_copy(
                    update={"language": wait(self.runner.submit(Stages.detect_language, first))}
                )
            self.language = options.language or UNDETERMINED
            # references only: each worker reads its chunks' samples when it decodes them
            batches = ([ChunkAudio(c, self.audio) for c in group] for group in _balanced(chunks, self.batch_size))
            pending: list[Word] = []
            turns: TurnIndex | None = None
            self._progress(0.0)
            # closed: a run that stops early (cancelled, failed) cancels the batches not started yet
            with _closed(self.runner.map(Stages.transcribe, batches, options=options, cancel=self.cancel)) as results:
                for batch_result in results:
                    for chunk_transcript in batch_result:
                        pending = join_words(pending, [w for seg in chunk_transcript.segments for w in seg.words])
                    self._progress(batch_result[-1].chunk.keep_end if batch_result else 0.0)
                    if diarization is not None and turns is None:
                        if not diarization.done():
                            continue  # keep transcribing (and reporting progress); speakers come later
                        turns = TurnIndex(self._identified(diarization.result()))
                    # every segment but the last is final: a later word has already closed it
                    segments = build_segments(pending, turns)
                    for segment in segments[:-1]:
                        yield self._seen(segment)
                    pending = pending[len(pending) - len(segments[-1].words or []) :] if segments else []
            if diarization is not None and turns is None:
                turns = TurnIndex(self._identified(wait(diarization)))
            for segment in build_segments(pending, turns):
                yield self._seen(segment)
            self._progress(self.duration)
        finally:
            if diarization is not None:
                diarization.cancel()

    def transcript(self) -> Transcript:
        """Run to the end and return the whole transcript."""
        segments = list(self)
        return Transcript(segments=segments, language=self.language, duration=self.duration, speakers=self.speakers)

    def _identified(self, turns: list[Turn]) -> list[Turn]:
        """The turns with speakers named after the known voices they match (none: as they are)."""
        if not self.known:
            return turns
        wait, hints = self.cancel.wait, self.options.speakers
        turns, self.identities = identify(
            turns,
            self.known,
            self.match_threshold,
            voiceprints=lambda groups: wait(self.runner.submit(Stages.voiceprints, self.audio, groups)),
            rediarize=lambda wider: wait(self.runner.submit(Stages.diarize, self.audio, wider)),
            hints=hints,
        )
        return turns

    def _seen(self, segment: Segment) -> Segment:
        if segment.speaker and segment.speaker not in self.speakers:
            self.speakers.append(segment.speaker)
        identity = self.identities.get(segment.speaker or "")
        if identity is not None:
            segment = segment.model_copy(
                update={"speaker_id": identity.voice_id, "speaker_confidence": identity.confidence}
            )
        if not self.options.word_timestamps:
            segment = segment.model_copy(update={"words": None})
        return segment

    def _progress(self, done: float) -> None:
        self.cancel.check()  # between stages and batches: where a job's cancel is noticed too
        if self.on_progress:
            self.on_progress(min(done, self.duration), self.duration)


def transcribe(
    audio: AudioSource | np.ndarray,
    options: TranscribeOptions,
    runner: Runner,
    *,
    batch_size: int = auto_batch_size("cuda"),
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    known: list[KnownVoice] | None = None,
    match_threshold: float = 0.0,
) -> Transcript:
    run = PipelineRun(audio, options, runner, batch_size=batch_size, on_progress=on_progress, cancel=cancel,
                      known=known, match_threshold=match_threshold)
    return run.transcript()


@contextmanager
def _closed(results: Iterator):
    """The results iterator, closed on the way out (a generator's `finally` runs then, not at collection)."""
    try:
        yield results
    finally:
        close = getattr(results, "close", None)
        if close:
            close()


def _balanced(chunks: list, batch_size: int) -> list[list]:
    """As few batches as `batch_size` allows, of equal size: 12 chunks at 8 make 6 + 6, not 8 + 4, so
    parallel workers finish together."""
    n_batches = -(-len(chunks) // batch_size)
    bounds = [round(i * len(chunks) / n_batches) for i in range(n_batches + 1)] if n_batches else [0]
    return [chunks[a:b] for a, b in zip(bounds, bounds[1:])]
