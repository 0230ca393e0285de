"""The voice store port: enrolled voices, each owned by the key that made it."""

from __future__ import annotations

from typing import Protocol

from shared.core.errors import VoiceNotFound
from shared.pipeline.identify import KnownVoice
from shared.voices.model import StoredVoice


class VoiceStore(Protocol):
    def add(self, voice: StoredVoice) -> None: ...

    def get(self, voice_id: str, owner: str) -> StoredVoice:
        """The owner's voice; VoiceNotFound for a missing one or another owner's."""
        ...

    def list(self, owner: str) -> list[StoredVoice]:
        """The owner's voices, oldest first."""
        ...

    def save(self, voice: StoredVoice) -> None:
        """Replace a stored voice (a rename)."""
        ...

    def delete(self, voice_id: str, owner: str) -> None:
        """Remove the voice and its vector for good; VoiceNotFound as get."""
        ...

    def close(self) -> None: ...


def known_voices(store: VoiceStore, owner: str, voice_ids: list[str], every: bool) -> list[KnownVoice]:
    """The voices a transcription names speakers with: the owner's `voice_ids` (ids deleted meanwhile
    are skipped: a job may run after a voice is gone), or all the owner's with `every`."""
    if every:
        stored = store.list(owner)
    else:
        stored = []
        for voice_id in dict.fromkeys(voice_ids):
            try:
                stored.append(store.get(voice_id, owner))
            except VoiceNotFound:
                continue
    return [KnownVoice(s.voice.voice_id, s.voice.name, s.vector) for s in stored]
