"""The voice store on the clips' modal.Volume: one small JSON file per voice, under a folder per owner.

Not the jobs' modal.Dict: the Dict drops an entry untouched for 7 days, and an enrolled voice must
last until its owner deletes it. The Volume keeps files for good, and the clip store's rules apply
(functions/volume_clips.py): its lock around every file operation (a reload fails while a file of the
Volume is open), a commit after every write so other containers see it, a reload on a miss.
Deleting a voice removes its file, vector included, and commits.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from functions.volume_clips import VolumeClipStore
from shared.core.errors import VoiceNotFound
from shared.media.clip_store import atomic_write
from shared.voices.model import StoredVoice, Voice


class VolumeVoiceStore:
    def __init__(self, clips: VolumeClipStore):
        self.clips = clips  # the Volume's handle and lock
        self.root = clips.root / "voices"
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, owner: str) -> Path:
        # owners are key identities: a digest keeps them out of file names
        return self.root / hashlib.sha256(owner.encode()).hexdigest()[:32]

    def _path(self, voice_id: str, owner: str) -> Path:
        return self._dir(owner) / f"{voice_id}.json"

    def add(self, voice: StoredVoice) -> None:
        self.save(voice)

    def save(self, stored: StoredVoice) -> None:
        record = {
            "voice": json.loads(stored.voice.model_dump_json()),
            "owner": stored.owner,
            "vector": base64.b64encode(stored.vector_bytes()).decode(),
        }
        path = self._path(stored.voice.voice_id, stored.owner)
        with self.clips.lock.shared():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(record).encode())
        self.clips.commit()

    def get(self, voice_id: str, owner: str) -> StoredVoice:
        path = self._path(voice_id, owner)
        found = self._read(path)
        if found is None and self.clips.reload():
            found = self._read(path)
        if found is None:
            raise VoiceNotFound(f"no voice {voice_id}")
        return found

    def list(self, owner: str) -> list[StoredVoice]:
        self.clips.reload()  # voices enrolled through other containers
        with self.clips.lock.shared():
            paths = sorted(self._dir(owner).glob("*.json"))
        voices = [v for v in (self._read(p) for p in paths) if v is not None]
        return sorted(voices, key=lambda s: (s.voice.created_at, s.voice.voice_id))

    def delete(self, voice_id: str, owner: str) -> None:
        self.get(voice_id, owner)  # VoiceNotFound, after a reload
        with self.clips.lock.shared():
            self._path(voice_id, owner).unlink(missing_ok=True)
        self.clips.commit()

    def close(self) -> None:
        pass

    def _read(self, path: Path) -> StoredVoice | None:
        with self.clips.lock.shared():
            try:
                record = json.loads(path.read_bytes())
            except FileNotFoundError:
                return None
        voice = Voice.model_validate(record["voice"])
        return StoredVoice(voice, record["owner"], StoredVoice.vector_from(base64.b64decode(record["vector"])))

