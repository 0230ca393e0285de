"""The SQLite voice store: a voice survives a reopen, belongs to one owner, and a deleted voiceprint
is gone from the file's bytes (secure_delete), not only from its index."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import numpy as np
import pytest

from shared.core.errors import InvalidVoiceName, VoiceNotFound
from shared.voices.model import StoredVoice, Voice, checked_name
from shared.voices.sqlite_store import SqliteVoiceStore
from shared.voices.store import known_voices


def a_voice(owner: str, name: str, seed: int) -> StoredVoice:
    now = datetime.now(timezone.utc)
    v = np.random.default_rng(seed).standard_normal(256).astype(np.float32)
    voice = Voice(voice_id=uuid.uuid4().hex, name=name, created_at=now, updated_at=now, speech_s=6.5, samples=2)
    return StoredVoice(voice, owner, v / np.linalg.norm(v))


def test_voices_survive_a_reopen_and_stay_with_their_owner(tmp_path):
    store = SqliteVoiceStore(tmp_path / "voices.sqlite3")
    alice, bob = a_voice("key-a", "Alice", 1), a_voice("key-b", "Bob", 2)
    store.add(alice)
    store.add(bob)
    store.close()
    store = SqliteVoiceStore(tmp_path / "voices.sqlite3")
    assert [s.voice for s in store.list("key-a")] == [alice.voice]
    np.testing.assert_array_equal(store.get(alice.voice.voice_id, "key-a").vector, alice.vector)
    with pytest.raises(VoiceNotFound):
        store.get(alice.voice.voice_id, "key-b")
    with pytest.raises(VoiceNotFound):
        store.delete(alice.voice.voice_id, "key-b")
    # ids of another owner, or deleted meanwhile, name no one
    assert [k.name for k in known_voices(store, "key-a", [bob.voice.voice_id, alice.voice.voice_id], False)] == ["Alice"]


def test_a_deleted_voiceprint_leaves_no_bytes_in_the_file(tmp_path):
    path = tmp_path / "voices.sqlite3"
    store = SqliteVoiceStore(path)
    alice = a_voice("key-a", "Alice", 3)
    store.add(alice)
    store.close()  # checkpointed into the main file
    assert alice.vector_bytes()[:64] in path.read_bytes()
    store = SqliteVoiceStore(path)
    store.delete(alice.voice.voice_id, "key-a")
    store.close()
    on_disk = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("voices.sqlite3-*"))
    assert alice.vector_bytes()[:64] not in on_disk


@pytest.mark.parametrize("name", ["", "   ", "<b>", "a&b", "[x]", "SPEAKER_01", "speaker_7", "x" * 65, "tab\there"])
def test_names_a_format_cannot_carry_are_refused(name):
    with pytest.raises(InvalidVoiceName):
        checked_name(name)


def test_a_name_is_stripped():
    assert checked_name("  Dr. Alice Smith ") == "Dr. Alice Smith"
