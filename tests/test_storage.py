"""The clip store: atomic writes, metadata with the audio, delete removes both, crash leftovers swept."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shared.core.domain import ClipInfo
from shared.core.errors import ClipNotFound, InvalidClipId
from shared.media.clip_store import ClipStore, atomic_write, new_clip_id


def _info(clip_id: str) -> ClipInfo:
    return ClipInfo(clip_id=clip_id, size_bytes=3, duration=1.0, created_at=datetime.now(timezone.utc))


def test_add_get_delete(tmp_path):
    store = ClipStore(tmp_path)
    staged = store.incoming_file()
    staged.write_bytes(b"abc")
    clip_id = new_clip_id()
    store.add(staged, _info(clip_id))
    assert not staged.exists()
    assert store.get(clip_id).clip_id == clip_id
    assert store.read_audio(clip_id).read_bytes() == b"abc"
    store.delete(clip_id)
    assert list(store.clips.iterdir()) == []
    with pytest.raises(ClipNotFound):
        store.get(clip_id)
    with pytest.raises(ClipNotFound):
        store.delete(clip_id)


def test_malformed_ids_never_touch_the_filesystem(tmp_path):
    store = ClipStore(tmp_path)
    for bad in ["../../etc/passwd", "", "ABC", "0" * 31, "g" * 32]:
        with pytest.raises(InvalidClipId):
            store.get(bad)


def test_atomic_write_leaves_no_temp_files_and_replaces_whole(tmp_path):
    target = tmp_path / "meta.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_half_received_uploads_are_swept_at_start(tmp_path):
    store = ClipStore(tmp_path)
    store.incoming_file().write_bytes(b"partial")
    assert ClipStore(tmp_path).sweep_incoming() == 1
    assert list(store.incoming.iterdir()) == []
