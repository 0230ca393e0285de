"""Enrolling, listing, renaming and deleting voices; and per-request reference voices (OpenAI's
known_speaker_references). No HTTP in here.

A voiceprint is the speaker encoder's mean over the speech of its samples (Stages.voiceprints, the same
call that makes a diarized speaker's voiceprint, so both are measured alike). An enrolment is refused
when its samples hold under VOICE_MIN_SPEECH_S of speech, when diarization hears more than one voice in
a sample, or when two samples do not sound like the same person (under VOICE_MATCH_THRESHOLD apart).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core.config import Settings
from shared.core.domain import VoicePrint
from shared.core.errors import InvalidVoiceSample, SeveralVoices, TooLittleSpeech, TooManyVoices, VoiceNameTaken
from shared.media.pcm import AudioSource
from shared.pipeline.identify import KnownVoice
from shared.pipeline.stages import Stages
from shared.service.transcription import TranscriptionService
from shared.voices.model import StoredVoice, Voice, checked_name
from shared.voices.store import VoiceStore

MAX_SAMPLES = 20  # samples (files or clip spans) in one enrolment
MAX_SAMPLE_S = 120.0  # seconds of audio one enrolment may hand the encoder, all samples together


@dataclass(frozen=True)
class Sample:
    """Some spans of a clip's audio that hold the voice (a whole upload: one span over all of it)."""

    audio: AudioSource
    spans: list[tuple[float, float]]


class VoiceService:
    def __init__(self, settings: Settings, transcription: TranscriptionService, store: VoiceStore):
        self.settings = settings
        self.transcription = transcription
        self.runner = transcription.runner
        self.store = store
        self._enrolling = threading.Lock()  # the cap's and the name's last check, and the add, together

    # --- the owner's voices ---
    def list(self, owner: str) -> list[Voice]:
        return [s.voice for s in self.store.list(owner)]

    def get(self, voice_id: str, owner: str) -> Voice:
        return self.store.get(voice_id, owner).voice

    def rename(self, voice_id: str, owner: str, name: str) -> Voice:
        name = checked_name(name)
        with self._enrolling:
            stored = self.store.get(voice_id, owner)
            self._check_name_free(owner, name, but=voice_id)
            voice = stored.voice.model_copy(update={"name": name, "updated_at": datetime.now(timezone.utc)})
            self.store.save(StoredVoice(voice, owner, stored.vector))
        return voice

    def delete(self, voice_id: str, owner: str) -> None:
        self.store.delete(voice_id, owner)

    # --- enrolment ---
    def clip_sample(self, clip_id: str, owner: str, spans: list[tuple[float, float]]) -> Sample:
        """Spans of one of the owner's stored clips (ClipNotFound for another's); each inside the clip."""
        clip = self.transcription.clip(clip_id, owner)
        for start, end in spans:
            if not (0 <= start < end <= clip.duration + 0.05):
                raise InvalidVoiceSample(
                    f"the span {start:g}-{end:g} s is not inside clip {clip_id} (0-{clip.duration:g} s, start < end)"
                )
        return Sample(self.transcription.clip_audio(clip_id), list(spans))

    def enroll(self, owner: str, name: str, samples: list[Sample]) -> Voice:
        """A new voice of `owner` named `name`, from the samples' speech."""
        name = checked_name(name)
        self._check_room(owner, name)
        vector, speech_s = self._voiceprint(samples, check=True)
        now = datetime.now(timezone.utc)
        voice = Voice(voice_id=uuid.uuid4().hex, name=name, created_at=now, updated_at=now,
                      speech_s=round(speech_s, 2), samples=len(samples))  # fmt: skip
        with self._enrolling:
            self._check_room(owner, name)
            self.store.add(StoredVoice(voice, owner, vector))
        return voice

    def enroll_uploads(self, owner: str, name: str, staged: list[Path], filenames: list[str | None]) -> Voice:
        """Enrol from uploaded files: each decoded into a clip for the voiceprint, deleted after."""
        self._check_room(owner, checked_name(name))
        return self._with_uploads(staged, filenames, lambda samples: self.enroll(owner, name, samples))

    def references(self, names: list[str], staged: list[Path]) -> list[KnownVoice]:
        """OpenAI's known_speaker_names[] / known_speaker_references[]: one voice per (name, audio) pair
        for this request only; nothing is stored."""
        names = [checked_name(n) for n in names]
        if len(set(n.casefold() for n in names)) != len(names):
            raise InvalidVoiceSample("known_speaker_names: every name must be different")

        def prints(samples: list[Sample]) -> list[KnownVoice]:
            known = []
            for name, sample in zip(names, samples):
                vector, _ = self._voiceprint([sample], check=False)
                known.append(KnownVoice(voice_id=name, name=name, vector=vector))
            return known

        return self._with_uploads(staged, [None] * len(staged), prints)

    def _with_uploads(self, staged: list[Path], filenames: list[str | None], use):
        if not staged:
            raise InvalidVoiceSample("no sample: send a file, or a clip_id with start and end")
        if len(staged) > MAX_SAMPLES:
            raise InvalidVoiceSample(f"at most {MAX_SAMPLES} samples per voice")
        clip_ids: list[str] = []
        try:
            for path, filename in zip(staged, filenames):
                clip = self.transcription.add_clip(path, filename=filename, content_type=None, quota=False)
                clip_ids.append(clip.clip_id)
            samples = []
            for clip_id in clip_ids:
                audio = self.transcription.clip_audio(clip_id)
                samples.append(Sample(audio, [(0.0, audio.duration)]))
            return use(samples)
        finally:
            for clip_id in clip_ids:
                self.transcription.clips.delete(clip_id)

    def _voiceprint(self, samples: list[Sample], *, check: bool) -> tuple[np.ndarray, float]:
        """The samples' voiceprint (their prints averaged by speech) and seconds of speech; `check`:
        refuse samples with too little speech, more than one voice, or voices that differ."""
        if not samples:
            raise InvalidVoiceSample("no sample: send a file, or a clip_id with start and end")
        if len(samples) > MAX_SAMPLES:
            raise InvalidVoiceSample(f"at most {MAX_SAMPLES} samples per voice")
        total = sum(end - start for s in samples for start, end in s.spans)
        if total > MAX_SAMPLE_S + 0.05:
            raise InvalidVoiceSample(
                f"the samples run {total:.0f} s together; at most {MAX_SAMPLE_S:.0f} s (the longest clear stretches "
                "of one voice make the best samples)"
            )
        prints: list[VoicePrint] = [
            self.runner.submit(Stages.voiceprints, s.audio, [s.spans], check).result()[0] for s in samples
        ]
        speech_s = sum(p.speech_s for p in prints)
        if check and speech_s < self.settings.voice_min_speech_s:
            raise TooLittleSpeech(
                f"the sample holds {speech_s:.1f} s of speech; a voice needs at least "
                f"{self.settings.voice_min_speech_s:g} s (VOICE_MIN_SPEECH_S)"
            )
        if not speech_s:
            raise TooLittleSpeech("no speech was heard in the reference audio")
        if check and any(p.voices > 1 for p in prints):
            raise SeveralVoices("more than one voice is heard in the sample: send a stretch where only this person speaks")
        heard = [p for p in prints if p.speech_s > 0]
        vector = _unit(sum(p.vector * p.speech_s for p in heard))
        if check and len(heard) > 1:
            for p in heard:
                rest = _unit(sum(q.vector * q.speech_s for q in heard if q is not p))
                if float(p.vector @ rest) < self.settings.voice_match_threshold:
                    raise SeveralVoices("the samples do not sound like the same person")
        return vector.astype(np.float32), speech_s

    def _check_room(self, owner: str, name: str) -> None:
        voices = self.store.list(owner)
        if len(voices) >= self.settings.voices_max_per_owner:
            raise TooManyVoices(
                f"you have {len(voices)} voices, the most allowed (VOICES_MAX_PER_OWNER): delete one first"
            )
        self._check_name_free(owner, name, voices=voices)

    def _check_name_free(self, owner: str, name: str, *, but: str | None = None, voices=None) -> None:
        for stored in voices if voices is not None else self.store.list(owner):
            if stored.voice.name.casefold() == name.casefold() and stored.voice.voice_id != but:
                raise VoiceNameTaken(f"you already have a voice named {name!r} ({stored.voice.voice_id})")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)
