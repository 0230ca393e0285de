"""How long clips stay: the sweep that deletes expired and orphaned clips (the job runner's janitor runs it
locally, `sweep_jobs` on Modal). Nothing here runs on a request: it sees every owner's clips.

- A clip uploaded with `POST /api/audio` is deleted CLIP_TTL_S after its upload, unless a queued or
  running job uses it (then it stays while that job lives; the next sweep after the job ended takes it).
- A clip uploaded with a job names the job (`job_id` in its metadata) and goes when the job expires
  (JOB_RESULT_TTL_S after it ended, shared/jobs/executor.py). If its job does not exist once the clip is
  ORPHAN_GRACE_S old, a crash came between storing the clip and creating the job, or between deleting
  the job and its clip: the clip is an orphan and goes.
- Audio files with no metadata (a crash inside storing or deleting one clip) go once ORPHAN_GRACE_S old.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.core.errors import ClipNotFound, JobNotFound
from shared.jobs.store import JobStore
from shared.media.clip_store import ClipStore

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 600.0  # far longer than storing a clip and creating its job take


@dataclass(frozen=True)
class Swept:
    expired: int = 0  # clips past CLIP_TTL_S
    orphaned: int = 0  # clips of a job that does not exist
    leftovers: int = 0  # audio files without metadata

    def counts(self) -> tuple[int, int, int]:
        return self.expired, self.orphaned, self.leftovers

    @property
    def total(self) -> int:
        return sum(self.counts())


def sweep_clips(clips: ClipStore, jobs: JobStore, *, now: float, clip_ttl_s: float,
                grace_s: float = ORPHAN_GRACE_S) -> Swept:  # fmt: skip
    """Delete the clips whose time is up (see the module's docstring); `now` in UNIX seconds."""
    in_use = jobs.open_clip_ids()
    expired = orphaned = 0
    for clip in clips.stored():
        if clip.clip_id in in_use:
            continue
        age = now - clip.created_at.timestamp()
        if clip.job_id is not None:
            if age < grace_s or _exists(jobs, clip.job_id):
                continue
            orphaned += 1
        elif age > clip_ttl_s:
            expired += 1
        else:
            continue
        try:
            clips.delete(clip.clip_id)
        except ClipNotFound:  # deleted meanwhile
            pass
    swept = Swept(expired, orphaned, clips.sweep_leftovers(now - grace_s))
    if swept.total:
        log.info("deleted %d expired clips, %d orphaned clips, %d leftover files", *swept.counts())
    return swept


def _exists(jobs: JobStore, job_id: str) -> bool:
    try:
        jobs.get(job_id)
    except JobNotFound:
        return False
    return True
