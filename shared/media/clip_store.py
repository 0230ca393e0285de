"""The clip store: uploaded audio and its metadata on a filesystem (a Modal Volume mounts as one too).

Writes are atomic: data goes to a temporary file in the same folder, is flushed to disk, and is renamed
into place, so a crash leaves either the old state or the new one, never a torn file. A clip exists once
its metadata file exists; the audio is written before it and removed after it.

Each clip keeps the upload as received (`<id>.audio`) and its one decode, 16 kHz mono float32 PCM
(`<id>.pcm`, shared/media/pcm.py), which the stages read span by span.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO

from shared.core.domain import ClipInfo, is_id
from shared.core.errors import ClipNotFound, InvalidClipId
from shared.media.decode import decode_to_pcm
from shared.media.pcm import PcmRef


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

    def add(self, staged: Path, info: ClipInfo, pcm: Path | None = None) -> ClipInfo:
        """Move a fully received upload (and its PCM decode) into the store, then publish its metadata."""
        for source, target in ((staged, self.audio_path(info.clip_id)), (pcm, self.pcm_path(info.clip_id))):
            if source is not None:
                with open(source, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(source, target)
        atomic_write(self._meta_path(info.clip_id), info.model_dump_json().encode())
        return info

    def clip_audio(self, clip_id: str) -> PcmRef:
        """The clip's PCM decode, made once from the upload for a clip stored without one."""
        self.get(clip_id)
        pcm = self.pcm_path(clip_id)
        if not pcm.exists():
            tmp = self.incoming_file()
            try:
                decode_to_pcm(self.audio_path(clip_id), tmp)
                os.replace(tmp, pcm)
            finally:
                tmp.unlink(missing_ok=True)
        return PcmRef.of(pcm)

    def get(self, clip_id: str) -> ClipInfo:
        meta = self._meta_path(clip_id)
        try:
            return ClipInfo.model_validate_json(meta.read_bytes())
        except FileNotFoundError:
            raise ClipNotFound(f"no clip with id {clip_id}") from None

    def read_audio(self, clip_id: str) -> Path:
        self.get(clip_id)
        return self.audio_path(clip_id)

    def delete(self, clip_id: str) -> None:
        meta = self._meta_path(clip_id)
        try:
            meta.unlink()
        except FileNotFoundError:
            raise ClipNotFound(f"no clip with id {clip_id}") from None
        self.audio_path(clip_id).unlink(missing_ok=True)
        self.pcm_path(clip_id).unlink(missing_ok=True)

    def sweep_incoming(self) -> int:
        """Remove uploads a crash left half received (called at start-up)."""
        n = 0
        for part in self.incoming.glob("*.part"):
            part.unlink(missing_ok=True)
            n += 1
        return n
