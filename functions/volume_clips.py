"""The clip store on a modal.Volume, shared by every container that mounts it (web and job workers).

A Volume is a filesystem per container: each container sees the files as they were when it started (or
last reloaded), plus its own changes; `commit()` publishes its changes, `reload()` fetches what others
published. So this store:
- commits after every write (an upload, a deletion), so other containers can see it;
- reloads on a miss (a clip uploaded through another web container) and looks again; concurrent misses
  share one reload;
- never leaves a Volume file open outside its lock: `reload()` (and the reload inside `commit()`) fails
  while any file of the Volume is open in the container. File operations share the lock, a reload or
  commit takes it alone, and `read_audio` hands out a private copy on local disk (the caller decodes it
  whenever it likes) instead of the Volume path;
- stages uploads on local disk, not on the Volume (another container's start-up sweep of half-received
  uploads must not see them), and copies them in atomically (temp file + rename, as ClipStore).

What it does not do: a container that still has a clip in its view after another one deleted it keeps
serving the clip's metadata until its next reload; a job on such a clip then fails with clip_not_found.
With `volume=None` (tests, `functions/local.py`) it is a plain filesystem store with the same rules.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from shared.core.domain import ClipInfo
from shared.core.errors import ClipNotFound, StorageBusy
from shared.media.pcm import PcmRef
from shared.media.clip_store import ClipStore, StoredClip, atomic_write, check_clip_id, not_found, stored_clip

log = logging.getLogger(__name__)

READ_COPY_TTL_S = 600.0  # private copies handed out by read_audio live this long (decoding starts at once)


class VolumeOps(Protocol):
    """The modal.Volume methods this store uses (called inside a container that mounts it)."""

    def commit(self) -> None: ...

    def reload(self) -> None: ...


class SharedLock:
    """Any number of holders of `shared()` at once, or one holder of `exclusive()` alone. A waiting
    exclusive holder blocks new shared ones, so a reload is not starved by a stream of reads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class VolumeClipStore(ClipStore):
    def __init__(
        self, root: Path, volume: VolumeOps | None = None, *, scratch: Path | None = None, reload_tries: int = 3
    ):
        # Not ClipStore.__init__: its incoming/ folder would be on the Volume.
        self.root = Path(root)
        self.clips = self.root / "clips"
        self.clips.mkdir(parents=True, exist_ok=True)
        if scratch is None:  # on a Volume: the container's local disk; else beside the clips, as ClipStore
            scratch = Path(tempfile.mkdtemp(prefix="whospoke-clips-")) if volume is not None else self.root
        scratch = Path(scratch)
        self.incoming = scratch / "incoming"
        self.reads = scratch / "reads"
        self.incoming.mkdir(parents=True, exist_ok=True)
        if volume is not None:
            self.reads.mkdir(parents=True, exist_ok=True)
        self.volume = volume
        self.reload_tries = reload_tries
        self.lock = SharedLock()
        self._last_reload_started = 0.0
        self.reloads = 0
        self.commits = 0

    # --- the Volume ---

    def reload(self, missed_at: float | None = None) -> bool:
        """Fetch what other containers committed. With `missed_at` (when the caller found a file
        missing), a reload that started after that moment already answers it: no second one."""
        if self.volume is None:
            return False
        with self.lock.exclusive():
            if missed_at is not None and self._last_reload_started > missed_at:
                return True
            self._last_reload_started = time.monotonic()
            for attempt in range(1, self.reload_tries + 1):
                try:
                    self.volume.reload()
                    self.reloads += 1
                    return True
                except RuntimeError as exc:  # open files this store did not open
                    log.warning("volume reload failed (%s), attempt %d of %d", exc, attempt, self.reload_tries)
                    time.sleep(0.2 * attempt)
        raise StorageBusy("the clip storage is busy; try again in a moment")

    def commit(self) -> None:
        if self.volume is None:
            return
        with self.lock.exclusive():
            self.volume.commit()
            self.commits += 1

    # --- ClipStore ---

    def add(self, staged: Path, info: ClipInfo, pcm: Path | None = None) -> StoredClip:
        info = stored_clip(info)
        with self.lock.shared():
            for source, target in ((staged, self.audio_path(info.clip_id)), (pcm, self.pcm_path(info.clip_id))):
                if source is not None:
                    with open(source, "rb") as f:
                        atomic_write(target, f)
            atomic_write(self._meta_path(info.clip_id), info.model_dump_json().encode())
        self.commit()  # now other containers can see it
        return info

    def clip_audio(self, clip_id: str) -> PcmRef:
        """The PCM copy on the Volume: stage containers mount it and read their spans from there."""
        clip = self.get(clip_id)
        with self.lock.shared():
            if self.pcm_path(clip_id).exists():
                return PcmRef.of(self.pcm_path(clip_id), clip.pcm_format)
        ref = super().clip_audio(clip_id)  # a clip stored before PCM copies: make one, once
        self.commit()
        return ref

    def load(self, clip_id: str) -> StoredClip:
        """The metadata, reloading the Volume once on a miss (a clip another container stored). The owner
        check (get) comes after: another owner's clip costs no reload."""
        check_clip_id(clip_id)
        missed_at = time.monotonic()
        try:
            with self.lock.shared():
                return super().load(clip_id)
        except ClipNotFound:
            if not self.reload(missed_at):
                raise
        with self.lock.shared():
            return super().load(clip_id)

    def read_audio(self, clip_id: str) -> Path:
        self.get(clip_id)
        if self.volume is None:
            return self.audio_path(clip_id)
        self._drop_old_reads()
        local = self.reads / f"{clip_id}.{uuid.uuid4().hex}.audio"
        with self.lock.shared():
            try:
                shutil.copyfile(self.audio_path(clip_id), local)
            except FileNotFoundError:
                raise not_found(clip_id) from None
        return local

    def delete(self, clip_id: str, owner: str | None = None) -> None:
        check_clip_id(clip_id)
        if owner is not None:
            self.get(clip_id, owner)  # reloads on a miss
        missed_at = time.monotonic()
        try:
            with self.lock.shared():
                super().delete(clip_id)
        except ClipNotFound:
            if not self.reload(missed_at):
                raise
            with self.lock.shared():
                super().delete(clip_id)
        self.commit()

    def stored(self) -> Iterator[StoredClip]:
        """Every clip's metadata this container sees (the sweep reloads first; the quota counts what this
        container saw at its last reload, plus its own writes)."""
        with self.lock.shared():  # read whole inside the lock: no Volume file stays open outside it
            return iter(list(super().stored()))

    def sweep_leftovers(self, older_than: float) -> int:
        with self.lock.shared():
            n = super().sweep_leftovers(older_than)
        if n:
            self.commit()
        return n

    def _drop_old_reads(self) -> None:
        cutoff = time.time() - READ_COPY_TTL_S
        for path in self.reads.glob("*.audio"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
