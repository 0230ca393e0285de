"""Application services: what the web layer, the CLI and the job runner call. No HTTP in here."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.audio import AudioDecodeError, DecodedAudio, decode
from shared.config import Settings
from shared.domain import ClipInfo, TranscribeOptions, Transcript
from shared.errors import EmptyFile, UnsupportedLanguage, UnsupportedMedia
from shared.pipeline import PipelineRun, ProgressCallback
from shared.runner import Runner
from shared.storage import ClipStore, new_clip_id

log = logging.getLogger(__name__)


def whisper_languages() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def check_language(language: str | None, whisper_model: str) -> str | None:
    """Refuse languages Whisper does not know, and non-English for English-only (*.en) models."""
    if language is None:
        return None
    language = language.strip().lower()
    if language not in whisper_languages():
        raise UnsupportedLanguage(f"unknown language {language!r}: use an ISO 639-1 code Whisper knows, e.g. 'en'")
    if whisper_model.endswith(".en") and language != "en":
        raise UnsupportedLanguage(f"the configured model {whisper_model} only transcribes English")
    return language


def decode_upload(path: Path) -> DecodedAudio:
    """Decode a received upload, or say in the client's terms why not (empty, not audio)."""
    if path.stat().st_size == 0:
        raise EmptyFile("the uploaded file is empty")
    try:
        return decode(path)
    except AudioDecodeError as exc:
        raise UnsupportedMedia(f"not a decodable audio file: {exc}") from None


class TranscriptionService:
    def __init__(self, settings: Settings, runner: Runner, clips: ClipStore):
        self.settings = settings
        self.runner = runner
        self.clips = clips

    # --- clips ---
    def add_clip(self, staged: Path, *, filename: str | None, content_type: str | None) -> ClipInfo:
        """Validate a received upload (it must decode as audio) and store it."""
        try:
            size = staged.stat().st_size
            audio = decode_upload(staged)
            info = ClipInfo(
                clip_id=new_clip_id(),
                filename=filename,
                content_type=content_type,
                size_bytes=size,
                duration=round(audio.duration, 3),
                sample_rate=audio.source_sample_rate,
                channels=audio.source_channels,
                codec=audio.codec,
                created_at=datetime.now(timezone.utc),
            )
            return self.clips.add(staged, info)
        finally:
            staged.unlink(missing_ok=True)

    def clip_samples(self, clip_id: str) -> np.ndarray:
        path = self.clips.read_audio(clip_id)
        try:
            return decode(path).samples
        except AudioDecodeError as exc:  # it decoded at upload; a changed file on disk is our problem
            raise RuntimeError(f"stored clip {clip_id} no longer decodes: {exc}") from exc

    # --- transcription ---
    def check_options(self, options: TranscribeOptions) -> TranscribeOptions:
        return options.model_copy(update={"language": check_language(options.language, self.settings.whisper_model)})

    def start(
        self, samples: np.ndarray, options: TranscribeOptions, on_progress: ProgressCallback | None = None
    ) -> PipelineRun:
        return PipelineRun(
            samples,
            self.check_options(options),
            self.runner,
            batch_size=self.settings.batch_size,
            on_progress=on_progress,
        )

    def transcribe_clip(
        self, clip_id: str, options: TranscribeOptions, on_progress: ProgressCallback | None = None
    ) -> Transcript:
        options = self.check_options(options)
        return self.start(self.clip_samples(clip_id), options, on_progress).transcript()
