"""Application services: what the web layer, the CLI and the job runner call. No HTTP in here."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.media.decode import AudioDecodeError, AudioTooLong, StreamInfo, decode_to_pcm
from shared.core.config import Settings
from shared.core.domain import ClipInfo, TranscribeOptions, Transcript, is_id
from shared.core.errors import AudioTooLong as AudioTooLongError
from shared.core.errors import EmptyFile, InvalidVoiceId, StorageQuotaExceeded, UnsupportedLanguage, UnsupportedMedia
from shared.core.errors import VoiceNotFound
from shared.media.pcm import S16, AudioSource, PcmRef
from shared.pipeline.cancel import CancelToken
from shared.pipeline.flow import PipelineRun, ProgressCallback
from shared.pipeline.identify import KnownVoice
from shared.pipeline.runner import Runner
from shared.media.clip_store import ClipStore, StoredClip, new_clip_id, not_found
from shared.voices.store import VoiceStore, known_voices

MB = 1024 * 1024

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


def checked_options(options: TranscribeOptions, whisper_model: str) -> TranscribeOptions:
    """The options' one check, run once where they enter (an API route, the CLI's arguments, a batch
    input): the language against Whisper and the configured model, normalized. Past that edge the
    TranscribeOptions are trusted as they are (the service, the pipeline and the job runner do not re-check)."""
    return options.model_copy(update={"language": check_language(options.language, whisper_model)})


def decode_upload(path: Path, pcm: Path, *, max_seconds: float) -> StreamInfo:
    """Decode a received upload into a PCM file, or say in the client's terms why not (empty, not audio,
    too long)."""
    if path.stat().st_size == 0:
        raise EmptyFile("the uploaded file is empty")
    try:
        return decode_to_pcm(path, pcm, max_seconds=max_seconds)
    except AudioTooLong as exc:
        raise AudioTooLongError(
            f"the audio runs {_duration(exc.seconds_seen)} or more; the limit is {_duration(exc.limit_s)} (MAX_AUDIO_S)"
        ) from None
    except AudioDecodeError as exc:
        raise UnsupportedMedia(f"not a decodable audio file: {exc}") from None


def _duration(seconds: float) -> str:
    """21.9 s, 12 min 05 s, 6 h 00 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    h, rest = divmod(int(seconds), 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


class TranscriptionService:
    def __init__(self, settings: Settings, runner: Runner, clips: ClipStore, voices: VoiceStore | None = None):
        self.settings = settings
        self.runner = runner
        self.clips = clips
        self.voices = voices  # enrolled voices, to name speakers with (None: identification off)
        self._adding = threading.Lock()  # the quota's last check and the clip's storing, one upload at a time

    # --- clips ---
    def add_clip(
        self,
        staged: Path,
        *,
        filename: str | None,
        content_type: str | None,
        owner: str = "",
        job_id: str | None = None,
        quota: bool = True,
    ) -> StoredClip:
        """Decode a received upload once, streamed into its PCM copy (which also validates it and gives
        its duration), and store both for `owner` (with `job_id`: the clip of that job, which goes with
        it). With `quota`, the owner's stored bytes may not pass STORAGE_QUOTA_MB: checked before the
        decode on the upload's size, and after it on the upload and its PCM copy. Nothing of a refused
        upload stays behind."""
        pcm = self.clips.staged_pcm(staged)
        try:
            size = staged.stat().st_size
            if quota:
                self._check_quota(owner, size)
            audio = decode_upload(staged, pcm, max_seconds=self.settings.max_audio_s)
            info = StoredClip(
                clip_id=new_clip_id(),
                filename=filename,
                content_type=content_type,
                size_bytes=size,
                duration=round(audio.duration, 3),
                sample_rate=audio.source_sample_rate,
                channels=audio.source_channels,
                codec=audio.codec,
                created_at=datetime.now(timezone.utc),
                owner=owner,
                job_id=job_id,
                pcm_format=S16,
            )
            with self._adding:
                if quota:
                    self._check_quota(owner, size + pcm.stat().st_size)
                return self.clips.add(staged, info, pcm)
        finally:
            staged.unlink(missing_ok=True)
            pcm.unlink(missing_ok=True)

    def _check_quota(self, owner: str, adding: int) -> None:
        quota = self.settings.storage_quota_mb
        if not quota:
            return
        used = self.clips.usage(owner)
        if used + adding > quota * MB:
            raise StorageQuotaExceeded(
                f"this upload needs {adding / MB:.1f} MB (the file and its decoded copy) and your clips already "
                f"take {used / MB:.1f} MB of the {quota:g} MB allowed (STORAGE_QUOTA_MB): delete clips you no "
                "longer need (DELETE /api/audio/{clip_id}) or wait for them to expire"
            )

    def clip(self, clip_id: str, owner: str) -> StoredClip:
        """The clip as its owner sees it: ClipNotFound for another owner's, a missing one, or one past
        CLIP_TTL_S (a clip uploaded with a job lives as long as the job)."""
        clip = self.clips.get(clip_id, owner)
        if clip.job_id is None and self.expired(clip, time.time()):
            raise not_found(clip_id)
        return clip

    def expired(self, clip: StoredClip, now: float) -> bool:
        return now - clip.created_at.timestamp() > self.settings.clip_ttl_s

    def delete_clip(self, clip_id: str, owner: str) -> None:
        """Delete the owner's clip (ClipNotFound for another owner's, as for a missing one)."""
        self.clips.delete(clip_id, owner)

    def clip_audio(self, clip_id: str) -> PcmRef:
        """A reference to the clip's decoded audio: what the stages are handed."""
        try:
            return self.clips.clip_audio(clip_id)
        except AudioDecodeError as exc:  # it decoded at upload; a changed file on disk is our problem
            raise RuntimeError(f"stored clip {clip_id} no longer decodes: {exc}") from exc

    # --- transcription ---
    def check_options(self, options: TranscribeOptions, owner: str = "") -> TranscribeOptions:
        """checked_options for this service's model, and the voices to name speakers with: each an id of
        the owner's (InvalidVoiceId, VoiceNotFound). The API routes' one check, before start/transcribe_*."""
        options = checked_options(options, self.settings.whisper_model)
        if options.voices:
            if self.voices is None:
                raise VoiceNotFound("this server keeps no voices")
            for voice_id in options.voices:
                if not is_id(voice_id):
                    raise InvalidVoiceId(f"voices: {voice_id[:40]!r} is not a voice id (32 lowercase hex characters)")
                self.voices.get(voice_id, owner)
        return options

    def known_voices(self, options: TranscribeOptions, owner: str) -> list[KnownVoice]:
        """The owner's voices the options ask to name speakers with (none without identification)."""
        if not options.identifies or self.voices is None:
            return []
        return known_voices(self.voices, owner, options.voices, options.identify)

    def start(
        self,
        audio: AudioSource | np.ndarray,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        *,
        owner: str = "",
        known: list[KnownVoice] | None = None,
    ) -> PipelineRun:
        """A run; `cancel` stops it between stages and batches (Cancelled), e.g. when its client is gone.
        Speakers are named after `known` voices, or (None) the owner's voices the options ask for."""
        return PipelineRun(
            audio,
            options,
            self.runner,
            batch_size=self.settings.batch_size,
            on_progress=on_progress,
            cancel=cancel,
            known=self.known_voices(options, owner) if known is None else known,
            match_threshold=self.settings.voice_match_threshold,
        )

    def transcribe_clip(
        self,
        clip_id: str,
        options: TranscribeOptions,
        on_progress: ProgressCallback | None = None,
        *,
        cancel: CancelToken | None = None,
        owner: str = "",
        known: list[KnownVoice] | None = None,
    ) -> Transcript:
        run = self.start(self.clip_audio(clip_id), options, on_progress, cancel, owner=owner, known=known)
        return run.transcript()

    def transcribe_upload(
        self,
        staged: Path,
        options: TranscribeOptions,
        *,
        filename: str | None,
        content_type: str | None,
        cancel: CancelToken | None = None,
        owner: str = "",
        known: list[KnownVoice] | None = None,
    ) -> Transcript:
        """An upload transcribed at once (OpenAI's routes): stored as a clip for the run, so the stages
        read it by reference like any other, and deleted after. Outside the storage quota: it is gone when
        the answer is (a crash meanwhile leaves it to the CLIP_TTL_S sweep)."""
        info = self.add_clip(staged, filename=filename, content_type=content_type, quota=False)
        try:
            return self.transcribe_clip(info.clip_id, options, cancel=cancel, owner=owner, known=known)
        finally:
            self.clips.delete(info.clip_id)
