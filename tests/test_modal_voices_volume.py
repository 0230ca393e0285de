"""Enrolled voices on Modal: files on the clips' Volume, seen by every container (commit after a write,
reload on a miss), owned by one key, gone for good when deleted. The Volume's per-container views are
the double of tests/test_modal_jobs_volume.py (its rules: a reload or commit fails while a file is open)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import numpy as np
import pytest

from functions.volume_voices import VolumeVoiceStore
from shared.core.errors import VoiceNotFound
from shared.voices.model import StoredVoice, Voice
from shared.voices.store import known_voices
from test_modal_jobs_volume import SharedVolume, container


def a_voice(owner: str, name: str) -> StoredVoice:
    now = datetime.now(timezone.utc)
    vector = np.random.default_rng(len(name)).standard_normal(256).astype(np.float32)
    voice = Voice(voice_id=uuid.uuid4().hex, name=name, created_at=now, updated_at=now, speech_s=8.0, samples=1)
    return StoredVoice(voice, owner, vector / np.linalg.norm(vector))


@pytest.fixture
def volume(tmp_path):
    return SharedVolume(tmp_path / "volume")


def test_a_voice_enrolled_in_one_container_is_named_in_another(volume, tmp_path):
    web = VolumeVoiceStore(container(volume, tmp_path, "web"))
    job = VolumeVoiceStore(container(volume, tmp_path, "run_job"))
    alice = a_voice("key-a", "Alice")
    web.add(alice)
    found = job.get(alice.voice.voice_id, "key-a")  # a miss, then a reload
    assert found.voice == alice.voice
    np.testing.assert_allclose(found.vector, alice.vector, rtol=0, atol=0)
    assert [k.name for k in known_voices(job, "key-a", [], every=True)] == ["Alice"]


def test_another_key_sees_none_of_them(volume, tmp_path):
    store = VolumeVoiceStore(container(volume, tmp_path, "web"))
    alice = a_voice("key-a", "Alice")
    store.add(alice)
    assert store.list("key-b") == []
    with pytest.raises(VoiceNotFound):
        store.get(alice.voice.voice_id, "key-b")
    with pytest.raises(VoiceNotFound):
        store.delete(alice.voice.voice_id, "key-b")
    assert store.get(alice.voice.voice_id, "key-a").voice.name == "Alice"


def test_rename_and_delete_reach_every_container_and_leave_no_file(volume, tmp_path):
    web = VolumeVoiceStore(container(volume, tmp_path, "web"))
    other = VolumeVoiceStore(container(volume, tmp_path, "web-2"))
    alice, bob = a_voice("key-a", "Alice"), a_voice("key-a", "Bob")
    web.add(alice)
    web.add(bob)
    renamed = alice.voice.model_copy(update={"name": "Alice B."})
    web.save(StoredVoice(renamed, "key-a", alice.vector))
    assert [s.voice.name for s in other.list("key-a")] == ["Alice B.", "Bob"]
    other.delete(bob.voice.voice_id, "key-a")
    assert [s.voice.name for s in web.list("key-a")] == ["Alice B."]
    committed = list((volume.committed / "voices").rglob("*.json"))
    assert len(committed) == 1 and bob.voice.voice_id not in committed[0].name
