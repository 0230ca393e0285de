"""`StageWorker`: the one implementation of `Stages` (shared/pipeline/stages.py), next to the models.

It holds one instance of each model a process needs (loaded once on first use, or all at once with
`load()`; thread-safe) and runs stages by name for the Runners. The in-process runner owns one; each
local_dev worker process owns one; on Modal each deployed class holds one for the stages it serves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.core import memory
from shared.core.config import Settings
from shared.core.domain import SAMPLE_RATE, Chunk, ChunkTranscript, SpeakerHints, TranscribeOptions, Turn, VoicePrint, Word
from shared.media.pcm import ArrayAudio, AudioSource, ChunkAudio
from shared.pipeline.stages import SPECS, Model, Stage, Stages

if TYPE_CHECKING:
    from shared.pipeline.diarization.port import Diarizer
    from shared.pipeline.diarization.embedded import EmbeddedDiarizer
    from shared.pipeline.transcriber import WhisperTranscriber
    from shared.pipeline.vad import SileroVad


class StageWorker(Stages):
    """Loads models on first use (or all at once with `load()`), then runs stages."""

    def __init__(self, settings: Settings):
        memory.limit_arenas()
        self.settings = settings
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}

    # -- the stages --

    def vad_split(self, audio: AudioSource) -> list[Chunk]:
        return self.vad.split(audio)

    def detect_language(self, chunk: ChunkAudio) -> str:
        return self.transcriber.detect_language(chunk)

    def transcribe(self, batch: list[ChunkAudio], options: TranscribeOptions) -> list[ChunkTranscript]:
        return self.transcriber.transcribe_batch(batch, options)

    def diarize(self, audio: AudioSource, hints: SpeakerHints) -> list[Turn]:
        return self.diarizer.diarize(audio, hints)

    def live_partial(self, audios: list[np.ndarray], options: TranscribeOptions) -> list[list[Word]]:
        from shared.pipeline.partials import decode_partials  # faster-whisper's batched pipeline, loaded late

        return decode_partials(self.partial_transcriber, audios, options)

    def live_final(self, batch: list[ChunkAudio], options: TranscribeOptions) -> list[ChunkTranscript]:
        return self.final_transcriber.transcribe_batch(batch, options)

    def embed_voice(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        return [self.voice_encoder.embed_voice(a) for a in audios]

    def embed_windows(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        return [self.voice_encoder.embed_windows(a) for a in audios]

    def voiceprints(
        self, audio: AudioSource, groups: list[list[tuple[float, float]]], count_voices: bool = False
    ) -> list[VoicePrint]:
        return [self.voice_encoder.voiceprint(audio, spans, count_voices=count_voices) for spans in groups]

    def run(self, stage: Stage | str, *args: Any, **kwargs: Any) -> Any:
        """Run one stage by name (what the Runners call)."""
        try:
            return getattr(self, Stage(stage).value)(*args, **kwargs)
        finally:
            memory.trim()  # a batch's working memory goes back to the system, not to a malloc arena

    # -- the models --

    def _model(self, name: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if name not in self._models:
                self._models[name] = build()
            return self._models[name]

    # Each model's module is imported inside its build, under the worker's lock: stages start on several
    # threads at once, and two threads importing scipy's submodules together can fail half-way
    # (KeyError: 'scipy', seen when VAD_SPLIT and DIARIZE loaded their models side by side). It also
    # keeps torch and faster-whisper out of processes that never load a model (the API's web side).
    @property
    def vad(self) -> "SileroVad":
        def build():
            from shared.pipeline.vad import SileroVad

            return SileroVad.from_settings(self.settings)

        return self._model(Model.VAD.value, build)

    @property
    def transcriber(self) -> "WhisperTranscriber":
        return self._whisper(Model.TRANSCRIBER.value, self.settings)

    @property
    def diarizer(self) -> "Diarizer":
        def build():
            from shared.pipeline.diarization import build_diarizer

            return build_diarizer(self.settings)

        return self._model(Model.DIARIZER.value, build)

    @property
    def partial_transcriber(self) -> "WhisperTranscriber":
        """Live partials' fast model (STREAM_PARTIAL_MODEL): the file model itself when they are the same."""
        return self._live_model(self.settings.stream_partial_model, Model.PARTIAL_TRANSCRIBER)

    @property
    def final_transcriber(self) -> "WhisperTranscriber":
        """Live finals' model (STREAM_FINAL_MODEL; empty: WHISPER_MODEL)."""
        return self._live_model(self.settings.stream_final_model or self.settings.whisper_model, Model.FINAL_TRANSCRIBER)

    def _live_model(self, name: str, model: Model) -> "WhisperTranscriber":
        if name == self.settings.whisper_model:
            return self.transcriber
        return self._whisper(model.value, self.settings.model_copy(update={"whisper_model": name}))

    def _whisper(self, key: str, settings: Settings) -> "WhisperTranscriber":
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

        return self._model(Model.VOICE_ENCODER.value, build)

    def load(self, stages: tuple[Stage, ...] = tuple(Stage), *, warm: bool = True) -> "StageWorker":
        """Load every model the given stages need now, and run each once on noise (`warm`), so the first
        request pays neither the load nor the models' first-use allocations (a worker's idle memory is
        then what it holds between requests)."""
        for model in dict.fromkeys(SPECS[Stage(s)].model for s in stages):
            getattr(self, model.value)
        if warm:
            self._warm_up(stages)
        memory.trim()
        return self

    def _warm_up(self, stages: tuple[Stage, ...]) -> None:
        noise = ArrayAudio((np.random.default_rng(0).standard_normal(30 * SAMPLE_RATE) * 0.01).astype(np.float32))
        if Stage.VAD_SPLIT in stages:
            self.vad.speech_probabilities(noise)
        if Stage.TRANSCRIBE in stages:  # one full batch of 30 s chunks: the largest a request makes
            chunk = Chunk(index=0, start=0.0, end=30.0, keep_start=0.0, keep_end=30.0)
            options = TranscribeOptions(language="en", diarize=False)
            self.transcriber.transcribe_batch([ChunkAudio(chunk, noise)] * self.settings.batch_size, options)
        encoder = getattr(self.diarizer, "encoder", None) if Stage.DIARIZE in stages else None
        if encoder is not None:  # the embedded diarizer: its mel front end and speaker encoder
            import torch  # loaded with the encoder, never by a process without one
            from resemblyzer.audio import wav_to_mel_spectrogram

            mel = wav_to_mel_spectrogram(noise.read(0, 10 * SAMPLE_RATE))[:160]
            with torch.inference_mode():
                encoder(torch.from_numpy(np.stack([mel] * 64)).float().to(encoder.device))
