"""Clips on a modal.Volume shared by several containers (functions/volume_clips.py): commit after writes,
reload on a miss, no Volume file left open across a reload; and two web apps ("containers") serving
the same clips and jobs.

A Volume cannot be mounted here, so `SharedVolume` stands in for one, with the behaviour the store
relies on (Modal's Volume guide): each container works on its own copy of the files (its view); commit
publishes the view's changes; reload publishes them too and then replaces the view with everything
committed; and reload fails while a file of the view is open in the process (read from /proc/self/fd).
"""

from __future__ import annotations

import os
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from audio_fixtures import ONE_SPEAKER
from fastapi.testclient import TestClient
from modal_doubles import MemoryDict
from test_jobs_api import NoModels

from functions.dict_job_store import DictJobStore
from functions.volume_clips import StorageBusy, VolumeClipStore
from shared.api.app import create_app
from shared.media.decode import decode
from shared.core.config import Settings
from shared.core.domain import ClipInfo
from shared.core.errors import ClipNotFound
from shared.media.clip_store import new_clip_id


class SharedVolume:
    """The committed state of one Volume; `container()` gives each container its view."""

    def __init__(self, root: Path):
        self.committed = root / "committed"
        self.committed.mkdir(parents=True)
        self.root = root

    def container(self, name: str) -> "VolumeView":
        return VolumeView(self, self.root / name)


class VolumeView:
    def __init__(self, volume: SharedVolume, path: Path):
        self.volume = volume
        self.path = path
        shutil.copytree(volume.committed, path)
        self.baseline = self._snapshot()
        self.commits = self.reloads = 0

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        out = {}
        for p in self.path.rglob("*"):
            if p.is_file():
                st = p.stat()
                out[str(p.relative_to(self.path))] = (st.st_size, st.st_mtime_ns)
        return out

    def _refuse_if_files_are_open(self) -> None:
        prefix = str(self.path) + os.sep
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                raise RuntimeError(f"there are open files preventing the operation: {target}")

    def _publish(self) -> None:
        now = self._snapshot()
        for rel, stamp in now.items():
            if self.baseline.get(rel) != stamp:
                dest = self.volume.committed / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.path / rel, dest)
        for rel in set(self.baseline) - set(now):
            (self.volume.committed / rel).unlink(missing_ok=True)

    def _replace_view(self) -> None:
        shutil.rmtree(self.path)
        shutil.copytree(self.volume.committed, self.path)
        self.baseline = self._snapshot()

    def commit(self) -> None:
        self._refuse_if_files_are_open()  # Modal's commit reloads afterwards
        self._publish()
        self._replace_view()
        self.commits += 1

    def reload(self) -> None:
        self._refuse_if_files_are_open()
        self._publish()
        self._replace_view()
        self.reloads += 1


@pytest.fixture
def volume(tmp_path):
    return SharedVolume(tmp_path / "volume")


def container(volume: SharedVolume, tmp_path: Path, name: str) -> VolumeClipStore:
    view = volume.container(name)
    return VolumeClipStore(view.path, view, scratch=tmp_path / f"{name}-local-disk")


def add(store: VolumeClipStore, tmp_path: Path, data: bytes = b"audio bytes") -> ClipInfo:
    staged = store.incoming_file()
    staged.write_bytes(data)
    info = ClipInfo(clip_id=new_clip_id(), size_bytes=len(data), duration=1.0, created_at=datetime.now(timezone.utc))
    return store.add(staged, info)


def test_a_clip_written_in_one_container_is_found_in_another(volume, tmp_path):
    a, b = container(volume, tmp_path, "a"), container(volume, tmp_path, "b")
    assert not str(a.incoming).startswith(str(a.root))  # uploads are staged on local disk, off the Volume
    info = add(a, tmp_path)
    assert a.volume.commits == 1  # committed right after the write
    assert b.get(info.clip_id) == info  # a miss, a reload, found
    assert b.volume.reloads == 1
    copy = b.read_audio(info.clip_id)
    assert copy.read_bytes() == b"audio bytes" and not str(copy).startswith(str(b.root))  # a private copy
    assert b.volume.reloads == 1  # found in the view: no reload
    with pytest.raises(ClipNotFound):
        b.get(new_clip_id())  # a real miss costs one reload, then 404


def test_a_deletion_is_published_and_other_containers_see_it_after_a_reload(volume, tmp_path):
    a, b = container(volume, tmp_path, "a"), container(volume, tmp_path, "b")
    info = add(a, tmp_path)
    b.get(info.clip_id)
    b.delete(info.clip_id)  # from the other container: found in its view, deleted, committed
    assert b.volume.commits == 1
    assert a.get(info.clip_id) == info  # a's view is stale until it reloads (documented)
    a.reload()
    with pytest.raises(ClipNotFound):
        a.get(info.clip_id)
    c = container(volume, tmp_path, "c")  # a container started now never sees it
    with pytest.raises(ClipNotFound):
        c.read_audio(info.clip_id)


def test_reloads_never_meet_an_open_file_of_the_store(volume, tmp_path):
    """Readers decode while other requests miss and reload: reads go to private copies and the
    Volume is touched only under the lock, so no reload fails."""
    a, b = container(volume, tmp_path, "a"), container(volume, tmp_path, "b")
    data = ONE_SPEAKER.read_bytes()
    clips = [add(a, tmp_path, data).clip_id for _ in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(clip_id: str) -> None:
        try:
            for _ in range(4):
                path = b.read_audio(clip_id)
                assert len(decode(path).samples) > 16000
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def misser() -> None:
        try:
            while not stop.is_set():
                with pytest.raises(ClipNotFound):
                    b.get(new_clip_id())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(c,)) for c in clips]
    missers = [threading.Thread(target=misser) for _ in range(2)]
    for t in readers + missers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in missers:
        t.join()
    assert errors == []
    assert b.volume.reloads >= 2


def test_a_file_held_open_outside_the_store_makes_reload_fail_as_on_modal(volume, tmp_path):
    a = container(volume, tmp_path, "a")
    info = add(a, tmp_path)
    a.reload_tries = 2
    with open(a.audio_path(info.clip_id), "rb"):  # what handing out the Volume path would allow
        with pytest.raises(StorageBusy) as caught:
            a.reload()
    assert caught.value.status == 503 and caught.value.code == "storage_busy"
    a.reload()  # closed: fine again


def test_two_web_containers_serve_the_same_clips_and_jobs(volume, tmp_path):
    """The web endpoint can scale out: upload through one container, submit and follow the job through
    the other; jobs are in the shared Dict and go to the dispatcher (no job threads in either)."""
    d = MemoryDict()
    dispatched = []
    apps = []
    for name in ("web-1", "web-2"):
        settings = Settings(_env_file=None, audio_storage_path=tmp_path / name)
        apps.append(
            create_app(
                settings,
                runner=NoModels(),
                job_store=DictJobStore(d),
                clip_store=container(volume, tmp_path, name),
                dispatch=dispatched.append,
            )
        )
    local = "http://localhost"  # without keys, the servers answer loopback host names
    with TestClient(apps[0], base_url=local) as one, TestClient(apps[1], base_url=local) as two:
        with open(ONE_SPEAKER, "rb") as f:
            clip = one.post("/api/audio", files={"file": ("one.flac", f)}).json()
        assert two.get(f"/api/audio/{clip['clip_id']}").json()["duration"] == clip["duration"]
        r = two.post("/api/transcriptions", params={"clip_id": clip["clip_id"], "diarize": False})
        assert r.status_code == 202, r.text
        job = r.json()
        assert [j.job_id for j in dispatched] == [job["job_id"]]
        assert one.get(job["links"]["self"]).json()["status"] == "queued"
        assert one.delete(job["links"]["self"]).json()["status"] == "cancelled"
        assert two.get(job["links"]["self"]).json()["status"] == "cancelled"
        for client in (one, two):
            jobs = client.app.state.jobs
            assert jobs.runner is None and jobs.webhooks is None  # nothing runs jobs on web threads
    assert not [t for t in threading.enumerate() if t.name.startswith(("job-worker", "webhook-dispatch"))]
