"""The clip store: atomic writes, metadata with the audio, delete removes both, crash leftovers swept;
owners, int16 PCM (and float32 clips stored before it), and retention: expiry and orphans."""

from __future__ import annotations

import time
import wave
from datetime import datetime, timezone

import numpy as np
import pytest

from shared.core.domain import ClipInfo, TranscribeOptions, Transcript
from shared.core.errors import ClipNotFound, InvalidClipId
from shared.jobs.model import Job, JobStatus, Progress, new_job_id
from shared.jobs.retention import ORPHAN_GRACE_S, Swept, sweep_clips
from shared.jobs.sqlite_store import SqliteJobStore
from shared.media.clip_store import ClipStore, StoredClip, atomic_write, new_clip_id
from shared.media.decode import decode_to_pcm
from shared.media.pcm import F32, S16, PcmRef, PcmWriter


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


# --- owners ---


def _stored(store: ClipStore, owner: str = "", job_id: str | None = None, created: datetime | None = None) -> str:
    staged = store.incoming_file()
    staged.write_bytes(b"abc")
    info = _info(new_clip_id()).model_copy(update={"created_at": created or datetime.now(timezone.utc)})
    return store.add(staged, StoredClip(**info.model_dump(), owner=owner, job_id=job_id, pcm_format=S16)).clip_id


def test_another_owners_clip_is_not_found_and_not_deleted(tmp_path):
    store = ClipStore(tmp_path)
    mine = _stored(store, owner="key:aaaaaaaaaaaaaaaa")
    for other in ("key:bbbbbbbbbbbbbbbb", ""):
        with pytest.raises(ClipNotFound, match=f"no clip with id {mine}$"):  # the words of a missing clip
            store.get(mine, other)
        with pytest.raises(ClipNotFound):
            store.delete(mine, other)
    assert store.get(mine, "key:aaaaaaaaaaaaaaaa").owner == "key:aaaaaaaaaaaaaaaa"
    assert "owner" not in store.get(mine).public().model_dump()  # the API shows ClipInfo only
    store.delete(mine, "key:aaaaaaaaaaaaaaaa")
    assert list(store.clips.iterdir()) == []


def test_metadata_from_before_owners_reads_as_nobodys_float32_clip(tmp_path):
    """A meta file written before owners and int16 PCM (plain ClipInfo JSON): no owner, float32 PCM."""
    store = ClipStore(tmp_path)
    clip_id = new_clip_id()
    samples = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    samples.astype("<f4").tofile(store.pcm_path(clip_id))
    store.audio_path(clip_id).write_bytes(b"abc")
    atomic_write(store._meta_path(clip_id), _info(clip_id).model_dump_json().encode())
    old = store.get(clip_id)
    assert old.owner == "" and old.job_id is None and old.pcm_format == F32
    ref = store.clip_audio(clip_id)
    assert ref.pcm_format == F32 and ref.num_samples == 1600
    np.testing.assert_array_equal(ref.read(100, 200), samples[100:200])  # read as written: not corrupted
    with pytest.raises(ClipNotFound):
        store.get(clip_id, "key:aaaaaaaaaaaaaaaa")  # with keys on, nobody's clip is no key's


def test_usage_counts_an_owners_uploads_and_pcm_copies(tmp_path):
    store = ClipStore(tmp_path)
    a = _stored(store, owner="key:aaaaaaaaaaaaaaaa")
    _stored(store, owner="key:bbbbbbbbbbbbbbbb")
    store.pcm_path(a).write_bytes(b"\0" * 1000)
    assert store.usage("key:aaaaaaaaaaaaaaaa") == 1003 and store.usage("key:bbbbbbbbbbbbbbbb") == 3
    assert store.usage("") == 0


# --- compact PCM ---


def test_pcm_is_stored_as_int16_within_half_a_step(tmp_path):
    rng = np.random.default_rng(3)
    samples = np.clip(rng.standard_normal(48_000) * 0.2, -1.2, 1.2).astype(np.float32)
    samples[:3] = [1.0, -1.0, 1.5]  # full scale and past it: clipped, not wrapped
    with PcmWriter(tmp_path / "x.pcm") as w:
        w.write(samples)
    ref = PcmRef.of(tmp_path / "x.pcm")
    assert ref.pcm_format == S16 and (tmp_path / "x.pcm").stat().st_size == 2 * len(samples) == ref.nbytes
    back = ref.read()
    assert back.dtype == np.float32 and back[0] == pytest.approx(32767 / 32768) and back[1] == -1.0
    inside = np.abs(samples) < 32767 / 32768
    assert np.max(np.abs(back[inside] - samples[inside])) <= 0.5 / 32768 + 1e-9


def test_a_16_bit_source_round_trips_exactly(tmp_path):
    """A 16 kHz 16-bit WAV (the common upload) loses nothing to the int16 PCM copy."""
    pcm16 = np.random.default_rng(4).integers(-32768, 32768, 16_000).astype("<i2")
    wav = tmp_path / "x.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm16.tobytes())
    decode_to_pcm(wav, tmp_path / "x.pcm")
    assert (tmp_path / "x.pcm").read_bytes() == pcm16.tobytes()


# --- retention: expiry and orphans, against a real job store ---

HOUR = 3600.0


def _job_for(clip_id: str, job_id: str | None = None) -> Job:
    return Job(
        job_id=job_id or new_job_id(), status=JobStatus.queued, clip_id=clip_id, owns_clip=job_id is not None,
        options=TranscribeOptions(), created_at=datetime.now(timezone.utc), progress=Progress(total=1.0),
    )  # fmt: skip


def test_expired_clips_go_unless_a_live_job_uses_them(tmp_path):
    store, jobs = ClipStore(tmp_path), SqliteJobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    old = datetime.fromtimestamp(now - 2 * HOUR, timezone.utc)
    fresh, stale, used = _stored(store), _stored(store, created=old), _stored(store, created=old)
    job = jobs.create(_job_for(used))
    assert sweep_clips(store, jobs, now=now, clip_ttl_s=HOUR) == Swept(expired=1)
    assert {c.clip_id for c in store.stored()} == {fresh, used}
    with pytest.raises(ClipNotFound):
        store.get(stale)
    jobs.claim(job.job_id)
    jobs.finish(job.job_id, Transcript(segments=[], language="en", duration=1.0))
    assert sweep_clips(store, jobs, now=now, clip_ttl_s=HOUR) == Swept(expired=1)  # its job ended: it goes now
    assert [c.clip_id for c in store.stored()] == [fresh]
    jobs.close()


def test_a_crash_between_storing_a_jobs_clip_and_creating_the_job_leaves_no_orphan(tmp_path):
    store, jobs = ClipStore(tmp_path), SqliteJobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    # the route's steps (shared/api/jobs.py): choose the job id, store the clip naming it, create the job
    orphan_job = new_job_id()
    orphan = _stored(store, owner="key:aaaaaaaaaaaaaaaa", job_id=orphan_job)  # ...and the server dies here
    kept_job = new_job_id()
    kept = _stored(store, owner="key:aaaaaaaaaaaaaaaa", job_id=kept_job)
    jobs.create(_job_for(kept, kept_job))
    assert sweep_clips(store, jobs, now=now, clip_ttl_s=HOUR) == Swept()  # within the grace: its job may come
    later = now + ORPHAN_GRACE_S + 1
    assert sweep_clips(store, jobs, now=later, clip_ttl_s=10 * HOUR) == Swept(orphaned=1)
    with pytest.raises(ClipNotFound):
        store.get(orphan)
    assert store.get(kept).job_id == kept_job  # a job's clip goes with its job, not with CLIP_TTL_S
    assert sweep_clips(store, jobs, now=later + 10 * HOUR, clip_ttl_s=HOUR) == Swept()
    jobs.close()


def test_a_crash_inside_storing_or_deleting_a_clip_leaves_no_files_behind(tmp_path):
    store, jobs = ClipStore(tmp_path), SqliteJobStore(tmp_path / "jobs.sqlite3")
    half_stored = new_clip_id()  # add(): the audio moved in, the metadata never written
    store.audio_path(half_stored).write_bytes(b"abc")
    store.pcm_path(half_stored).write_bytes(b"\0\0")
    half_deleted = _stored(store)  # delete(): the metadata gone, the audio not yet
    store._meta_path(half_deleted).unlink()
    whole = _stored(store)
    now = time.time()
    assert sweep_clips(store, jobs, now=now, clip_ttl_s=HOUR) == Swept()  # might be an upload in progress
    assert sweep_clips(store, jobs, now=now + ORPHAN_GRACE_S + 1, clip_ttl_s=HOUR) == Swept(leftovers=3)
    assert sorted(p.name for p in store.clips.iterdir()) == [f"{whole}.audio", f"{whole}.json"]
    jobs.close()
