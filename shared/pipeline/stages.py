"""The pipeline's stages and the worker that runs them next to its models.

A stage is a named unit of work the pipeline hands to a Runner. Audio goes by reference (shared/media/pcm.py:
a stored PCM file's path and length); each stage reads the spans it needs:
- VAD_SPLIT(audio) -> list[Chunk]
- DETECT_LANGUAGE(chunk: ChunkAudio) -> str
- TRANSCRIBE(batch: list[ChunkAudio], options: TranscribeOptions) -> list[ChunkTranscript]
- DIARIZE(audio, hints: SpeakerHints) -> list[Turn]
Live sessions (shared/live/) send an utterance's samples, at most 30 s, by value:
- LIVE_PARTIAL(audios: list[ndarray], options) -> list[list[Word]]   the fast model, one greedy pass
- LIVE_FINAL(batch: list[ChunkAudio], options) -> list[ChunkTranscript]   the accurate model, as TRANSCRIBE
- EMBED_VOICE(audios: list[ndarray]) -> list[ndarray]   the diarizer's speaker encoder, one vector each

`StageWorker` holds one instance of each model a process needs (loaded once, thread-safe) and runs
stages by name. The in-process runner owns one; each local_dev worker process owns one; on Modal each
deployable class wraps the single model it needs instead.
"""

from __future__ import annotations

import threading
from enum import Enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.pipeline.diarization import Diarizer
    from shared.pipeline.diarization.embedded import EmbeddedDiarizer
    from shared.pipeline.transcriber import WhisperTranscriber
    from shared.pipeline.vad import SileroVad


class Stage(str, Enum):
    VAD_SPLIT = "vad_split"
    DETECT_LANGUAGE = "detect_language"
    TRANSCRIBE = "transcribe"
    DIARIZE = "diarize"
    LIVE_PARTIAL = "live_partial"
    LIVE_FINAL = "live_final"
    EMBED_VOICE = "embed_voice"


class Role(str, Enum):
    """What a worker serves: every stage, or one side of a split layout (with two or more GPUs one
    diarizes and the others transcribe). `--role` of `python -m local_dev worker` takes these names."""

    ALL = "all"
    TRANSCRIBE = "transcribe"
    DIARIZE = "diarize"


# The split roles that serve each stage (Role.ALL serves every stage). A new Stage needs one line here;
# tests/test_stages.py fails for a stage that has none.
SERVED_BY: dict[Stage, tuple[Role, ...]] = {
    Stage.VAD_SPLIT: (Role.TRANSCRIBE, Role.DIARIZE),
    Stage.DETECT_LANGUAGE: (Role.TRANSCRIBE,),
    Stage.TRANSCRIBE: (Role.TRANSCRIBE,),
    Stage.DIARIZE: (Role.DIARIZE,),
    Stage.LIVE_PARTIAL: (Role.TRANSCRIBE,),
    Stage.LIVE_FINAL: (Role.TRANSCRIBE,),
    Stage.EMBED_VOICE: (Role.DIARIZE,),
}

ROLE_STAGES: dict[Role, tuple[Stage, ...]] = {
    Role.ALL: tuple(Stage),
    **{role: tuple(s for s in Stage if role in SERVED_BY.get(s, ())) for role in (Role.TRANSCRIBE, Role.DIARIZE)},
}


def role_of(stages: tuple[Stage, ...]) -> Role:
    """The role whose stages are exactly `stages`."""
    for role, served in ROLE_STAGES.items():
        if set(served) == set(stages):
            return role
    raise ValueError(f"no worker role serves exactly {sorted(s.value for s in stages)}")


# DETECT_LANGUAGE listens to this much of a chunk's start (Whisper's own window is 30 s).
LANGUAGE_PROBE_S = 30.0


def default_batch_size(device: str) -> int:
    """Chunks per transcription batch when BATCH_SIZE is 0 (auto). On CPU a batch of 8 costs ~600 MB of
    encoder attention at its peak and decodes no faster than two of 4 (measured with two decodes per
    worker, as the local pool runs them); a GPU fills better with 8."""
    return 8 if device == "cuda" else 4


class StageWorker:
    """Loads models on first use (or all at once with `load()`), then runs stages by name."""

    def __init__(self, settings: "Settings"):
        from shared.core import memory

        memory.limit_arenas()
        self.settings = settings
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}

    def _model(self, name: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._models:
                self._models[name] = build()
            return self._models[name]

    # Each model's module is imported inside its build, under the worker's lock: stages start on several
    # threads at once, and two threads importing scipy's submodules together can fail half-way
    # (KeyError: 'scipy', seen when VAD_SPLIT and DIARIZE loaded their models side by side).
    @property
    def vad(self) -> "SileroVad":
        def build():
            from shared.pipeline.vad import SileroVad

            return SileroVad.from_settings(self.settings)

        return self._model("vad", build)

    @property
    def transcriber(self) -> "WhisperTranscriber":
        def build():
            from shared.pipeline.transcriber import WhisperTranscriber

            return WhisperTranscriber.from_settings(self.settings)

        return self._model("transcriber", build)

    @property
    def diarizer(self) -> "Diarizer":
        def build():
            from shared.pipeline.diarization import build_diarizer

            return build_diarizer(self.settings)

        return self._model("diarizer", build)

    @property
    def partial_transcriber(self) -> "WhisperTranscriber":
        """Live partials' fast model (STREAM_PARTIAL_MODEL): the file model itself when they are the same."""
        return self._live_model(self.settings.stream_partial_model, "partial_transcriber")

    @property
    def final_transcriber(self) -> "WhisperTranscriber":
        """Live finals' model (STREAM_FINAL_MODEL; empty: WHISPER_MODEL)."""
        return self._live_model(self.settings.stream_final_model or self.settings.whisper_model, "final_transcriber")

    def _live_model(self, name: str, key: str) -> "WhisperTranscriber":
        if name == self.settings.whisper_model:
            return self.transcriber
        settings = self.settings.model_copy(update={"whisper_model": name})

        def build():
            from shared.pipeline.transcriber import WhisperTranscriber

            return WhisperTranscriber.from_settings(settings)

        return self._model(key, build)

    @property
    def voice_encoder(self) -> "EmbeddedDiarizer":
        """Live speakers' encoder: the embedded diarizer's (one is loaded beside pyannote for this)."""
        if self.settings.resolved_diarizer == "embedded":
            return self.diarizer  # type: ignore[return-value]

        def build():
            from shared.pipeline.diarization.embedded import EmbeddedDiarizer

            return EmbeddedDiarizer.from_settings(self.settings)

        return self._model("voice_encoder", build)

    def load(self, stages: tuple[Stage, ...] = tuple(Stage), *, warm: bool = True) -> "StageWorker":
        """Load every model the given stages need now, and run each once on noise (`warm`), so the first
        request pays neither the load nor the models' first-use allocations (a worker's idle memory is
        then what it holds between requests)."""
        from shared.core import memory

        if Stage.VAD_SPLIT in stages:
            self.vad  # noqa: B018 - property loads the model
        if Stage.TRANSCRIBE in stages or Stage.DETECT_LANGUAGE in stages:
            self.transcriber  # noqa: B018
        if Stage.DIARIZE in stages:
            self.diarizer  # noqa: B018
        if Stage.LIVE_PARTIAL in stages:
            self.partial_transcriber  # noqa: B018
        if Stage.LIVE_FINAL in stages:
            self.final_transcriber  # noqa: B018
        if Stage.EMBED_VOICE in stages:
            self.voice_encoder  # noqa: B018
        if warm:
            self._warm_up(stages)
        memory.trim()
        return self

    def _warm_up(self, stages: tuple[Stage, ...]) -> None:
        import numpy as np

        from shared.core.domain import SAMPLE_RATE, Chunk, ChunkAudio, TranscribeOptions
        from shared.media.pcm import ArrayAudio

        noise = ArrayAudio((np.random.default_rng(0).standard_normal(30 * SAMPLE_RATE) * 0.01).astype(np.float32))
        if Stage.VAD_SPLIT in stages:
            self.vad.speech_probabilities(noise)
        if Stage.TRANSCRIBE in stages:  # one full batch of 30 s chunks: the largest a request makes
            chunk = Chunk(index=0, start=0.0, end=30.0, keep_start=0.0, keep_end=30.0)
            options = TranscribeOptions(language="en", diarize=False)
            self.transcriber.transcribe_batch([ChunkAudio(chunk, noise)] * self.settings.batch_size, options)
        encoder = getattr(self.diarizer, "encoder", None) if Stage.DIARIZE in stages else None
        if encoder is not None:  # the embedded diarizer: its mel front end and speaker encoder
            import torch
            from resemblyzer.audio import wav_to_mel_spectrogram

            mel = wav_to_mel_spectrogram(noise.read(0, 10 * SAMPLE_RATE))[:160]
            with torch.inference_mode():
                encoder(torch.from_numpy(np.stack([mel] * 64)).float().to(encoder.device))

    def run(self, stage: Stage | str, *args: Any, **kwargs: Any) -> Any:
        from shared.core import memory

        try:
            return self._run(Stage(stage), *args, **kwargs)
        finally:
            memory.trim()  # a batch's working memory goes back to the system, not to a malloc arena

    def _run(self, stage: Stage, *args: Any, **kwargs: Any) -> Any:
        if stage is Stage.VAD_SPLIT:
            return self.vad.split(*args, **kwargs)
        if stage is Stage.DETECT_LANGUAGE:
            return self.transcriber.detect_language(*args, **kwargs)
        if stage is Stage.TRANSCRIBE:
            return self.transcriber.transcribe_batch(*args, **kwargs)
        if stage is Stage.DIARIZE:
            return self.diarizer.diarize(*args, **kwargs)
        if stage is Stage.LIVE_PARTIAL:
            from shared.pipeline.partials import decode_partials

            return decode_partials(self.partial_transcriber, *args, **kwargs)
        if stage is Stage.LIVE_FINAL:
            return self.final_transcriber.transcribe_batch(*args, **kwargs)
        if stage is Stage.EMBED_VOICE:
            return [self.voice_encoder.embed_voice(a) for a in args[0]]
        raise ValueError(f"unknown stage {stage!r}")
