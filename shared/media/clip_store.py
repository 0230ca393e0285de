"""The clip store: uploaded audio and its metadata on a filesystem (a Modal Volume mounts as one too).

Writes are atomic: data goes to a temporary file in the same folder, is flushed to disk, and is renamed
into place, so a crash leaves either the old state or the new one, never a torn file. A clip exists once
its metadata file exists; the audio is written before it and removed after it (audio files without
metadata, left by a crash in between, are swept by `sweep_leftovers`).

Each clip keeps the upload as received (`<id>.audio`) and its one decode, 16 kHz mono PCM (`<id>.pcm`,
shared/media/pcm.py: int16, or float32 for clips stored before), which the stages read span by span.
The metadata (`<id>.json`, a `StoredClip`) is what the API shows (ClipInfo) plus what only the server
knows: the clip's owner, the job it was uploaded with, and its PCM format.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import Field, ValidationError

from shared.core.domain import ClipInfo, is_id
from shared.core.errors import ClipNotFound, InvalidClipId
from shared.media.decode import decode_to_pcm
from shared.media.pcm import F32, S16, PcmRef

DATA_SUFFIXES = ("audio", "pcm")


def atomic_write(path: Path, data: bytes | BinaryIO) -> int:
    """Write bytes or a binary stream to `path` atomically; return the number of bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                shutil.copyfileobj(data, f, length=1 << 20)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def new_clip_id() -> str:
    return uuid.uuid4().hex


def check_clip_id(clip_id: str) -> str:
    if not is_id(clip_id):
        raise InvalidClipId(f"malformed clip_id {clip_id!r}: expected 32 lowercase hex characters")
    return clip_id


class StoredClip(ClipInfo):
    """A clip's metadata file. Files written before a field existed read with its default: no owner
    (seen only when API keys are off), no job, float32 PCM."""

    owner: str = Field("", description="the API key's id that uploaded it ('' when keys are off)")
    job_id: str | None = Field(None, description="uploaded with this job: it lives and goes with the job")
    pcm_format: str = Field(F32, description="how its PCM copy is stored (shared/media/pcm.py)")

    def public(self) -> ClipInfo:
        """What the API shows of it."""
        return ClipInfo.model_validate(self.model_dump(include=set(ClipInfo.model_fields)))


def stored_clip(info: ClipInfo) -> StoredClip:
    """The metadata to store for `info`: a plain ClipInfo is nobody's, with its PCM written as int16."""
    return info if isinstance(info, StoredClip) else StoredClip(**info.model_dump(), pcm_format=S16)


def not_found(clip_id: str) -> ClipNotFound:
    """The one answer for a missing clip and for another owner's: ids cannot be probed."""
    return ClipNotFound(f"no clip with id {clip_id}")


class ClipStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.clips = self.root / "clips"
        self.incoming = self.root / "incoming"
        self.clips.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def _path(self, clip_id: str, suffix: str) -> Path:
        # The clip id check, kept here on purpose: this is where a client's string becomes a file name, so
        # a malformed id ("../x") never reaches the file system (path traversal). The routes do not check
        # it again; get() and delete() raise InvalidClipId before anything else.
        return self.clips / f"{check_clip_id(clip_id)}.{suffix}"

    def audio_path(self, clip_id: str) -> Path:
        return self._path(clip_id, "audio")

    def pcm_path(self, clip_id: str) -> Path:
        return self._path(clip_id, "pcm")

    def _meta_path(self, clip_id: str) -> Path:
        return self._path(clip_id, "json")

    def incoming_file(self) -> Path:
        """A scratch path for an upload being received, on the same filesystem as the store."""
        fd, tmp = tempfile.mkstemp(dir=self.incoming, suffix=".part")
        os.close(fd)
        return Path(tmp)

    def staged_pcm(self, staged: Path) -> Path:
        """Where the decode of a staged upload goes (swept with it after a crash)."""
        return staged.with_name(staged.name + ".pcm.part")

    def add(self, staged: Path, info: ClipInfo, pcm: Path | None = None) -> StoredClip:
        """Move a fully received upload (and its PCM decode) into the store, then publish its metadata."""
        info = stored_clip(info)
        for source, target in ((staged, self.audio_path(info.clip_id)), (pcm, self.pcm_path(info.clip_id))):
            if source is not None:
                with open(source, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(source, target)
        self._write_meta(info)
        return info

    def _write_meta(self, info: StoredClip) -> None:
        atomic_write(self._meta_path(info.clip_id), info.model_dump_json().encode())

    def clip_audio(self, clip_id: str) -> PcmRef:
        """The clip's PCM decode, made once from the upload for a clip stored without one."""
        clip = self.get(clip_id)
        pcm = self.pcm_path(clip_id)
        if not pcm.exists():
            tmp = self.incoming_file()
            try:
                decode_to_pcm(self.audio_path(clip_id), tmp)
                os.replace(tmp, pcm)
            finally:
                tmp.unlink(missing_ok=True)
            if clip.pcm_format != S16:
                clip = clip.model_copy(update={"pcm_format": S16})
                self._write_meta(clip)
        return PcmRef.of(pcm, clip.pcm_format)

    def load(self, clip_id: str) -> StoredClip:
        """The clip's metadata, whoever owns it; ClipNotFound when there is none."""
        try:
            return StoredClip.model_validate_json(self._meta_path(clip_id).read_bytes())
        except FileNotFoundError:
            raise not_found(clip_id) from None

    def get(self, clip_id: str, owner: str | None = None) -> StoredClip:
        """The clip; with `owner`, only if it is that owner's (else ClipNotFound, as for a missing one)."""
        clip = self.load(clip_id)
        if owner is not None and clip.owner != owner:
            raise not_found(clip_id)
        return clip

    def read_audio(self, clip_id: str) -> Path:
        self.get(clip_id)
        return self.audio_path(clip_id)

    def delete(self, clip_id: str, owner: str | None = None) -> None:
        """Remove the clip (with `owner`: only that owner's): its metadata first, then its audio."""
        if owner is not None:
            self.get(clip_id, owner)
        meta = self._meta_path(clip_id)
        try:
            meta.unlink()
        except FileNotFoundError:
            raise not_found(clip_id) from None
        for suffix in DATA_SUFFIXES:
            self._path(clip_id, suffix).unlink(missing_ok=True)

    # --- what retention and quotas read ---

    def stored(self) -> Iterator[StoredClip]:
        """Every clip's metadata (a clip deleted meanwhile, or a file that does not parse, is skipped)."""
        for meta in self.clips.glob("*.json"):
            if not is_id(meta.stem):
                continue
            try:
                yield StoredClip.model_validate_json(meta.read_bytes())
            except (FileNotFoundError, ValidationError, ValueError):
                continue

    def stored_bytes(self, clip_id: str) -> int:
        """Bytes the clip takes on disk: the upload and its PCM copy."""
        total = 0
        for suffix in DATA_SUFFIXES:
            try:
                total += self._path(clip_id, suffix).stat().st_size
            except FileNotFoundError:
                pass
        return total

    def usage(self, owner: str) -> int:
        """Bytes the owner's clips take (uploads and PCM copies): what STORAGE_QUOTA_MB counts."""
        return sum(self.stored_bytes(c.clip_id) for c in self.stored() if c.owner == owner)

    def sweep_leftovers(self, older_than: float) -> int:
        """Remove audio files without metadata last changed before `older_than` (UNIX seconds): a crash
        between moving an upload in and publishing its metadata, or between a deletion's two steps."""
        n = 0
        for suffix in DATA_SUFFIXES:
            for path in self.clips.glob(f"*.{suffix}"):
                if not is_id(path.stem) or self._meta_path(path.stem).exists():
                    continue
                try:
                    if path.stat().st_mtime < older_than:
                        path.unlink()
                        n += 1
                except FileNotFoundError:
                    pass
        return n

    def sweep_incoming(self) -> int:
        """Remove uploads a crash left half received (called at start-up)."""
        n = 0
        for part in self.incoming.glob("*.part"):
            part.unlink(missing_ok=True)
            n += 1
        return n
