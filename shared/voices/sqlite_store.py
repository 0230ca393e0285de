"""VoiceStore on SQLite (stdlib): voices.sqlite3 beside the job store's file, WAL journal,
synchronous=FULL, secure_delete on, so a deleted voiceprint is overwritten in the file, not just
unlinked from its page (a voiceprint is personal data)."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from shared.core.errors import VoiceNotFound
from shared.voices.model import StoredVoice, Voice

VOICES_DB = "voices.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    voice_id    TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    vector      BLOB NOT NULL,
    speech_s    REAL NOT NULL,
    samples     INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS voices_by_owner ON voices (owner, created_at);
"""


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


class SqliteVoiceStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        with self._lock:
            self._db.executescript(SCHEMA)

    def add(self, voice: StoredVoice) -> None:
        self._write("INSERT", voice)

    def save(self, voice: StoredVoice) -> None:
        self._write("REPLACE", voice)

    def _write(self, verb: str, stored: StoredVoice) -> None:
        v = stored.voice
        with self._lock:
            self._db.execute(
                f"{verb} INTO voices (voice_id, owner, name, vector, speech_s, samples, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (v.voice_id, stored.owner, v.name, stored.vector_bytes(), v.speech_s, v.samples,
                 v.created_at.timestamp(), v.updated_at.timestamp()),
            )  # fmt: skip

    def get(self, voice_id: str, owner: str) -> StoredVoice:
        with self._lock:
            row = self._db.execute("SELECT * FROM voices WHERE voice_id = ? AND owner = ?", (voice_id, owner)).fetchone()
        if row is None:
            raise VoiceNotFound(f"no voice {voice_id}")
        return _stored(row)

    def list(self, owner: str) -> list[StoredVoice]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM voices WHERE owner = ? ORDER BY created_at, voice_id", (owner,)).fetchall()
        return [_stored(r) for r in rows]

    def delete(self, voice_id: str, owner: str) -> None:
        with self._lock:
            gone = self._db.execute("DELETE FROM voices WHERE voice_id = ? AND owner = ?", (voice_id, owner)).rowcount
        if not gone:
            raise VoiceNotFound(f"no voice {voice_id}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _stored(row: sqlite3.Row) -> StoredVoice:
    voice = Voice(
        voice_id=row["voice_id"],
        name=row["name"],
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
        speech_s=row["speech_s"],
        samples=row["samples"],
    )
    return StoredVoice(voice, row["owner"], StoredVoice.vector_from(row["vector"]))
