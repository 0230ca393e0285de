"""Settings, read once from the environment and `.env`. Every name is listed in `.env.example`.

The local worker pool's own names (CPU_WORKERS, BATCH_MERGE, WORKER_*, ...) are local_dev/settings.py's."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def auto_batch_size(device: str, *, billed_gpu: bool = False) -> int:
    """The batch-size policy, the one place it lives: chunks per transcription batch when BATCH_SIZE is 0
    (auto). On CPU a batch of 8 costs ~600 MB of encoder attention at its peak and decodes no faster than
    two of 4 (measured with two decodes per worker, as the local pool runs them); a GPU fills better with 8.
    `billed_gpu`: a GPU billed by the second (Modal, functions/settings.py) gets twice the CUDA batch, as it
    serves nothing else (the README's cost table is figured at 16)."""
    size = 8 if device == "cuda" else 4
    return 2 * size if billed_gpu else size


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- the seed's names ---
    huggingface_token: SecretStr | None = None
    pyannote_model: str | None = Field(
        default=None,
        description="Hub id (e.g. pyannote/speaker-diarization-community-1) or a local config/checkpoint path",
    )
    whisper_model: str = Field(
        default="tiny.en",
        description="'tiny.en' uses the bundled model; other names (large-v3, ...) or a CTranslate2 folder",
    )
    audio_storage_path: Path = Path("./data")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    hf_home: Path | None = None

    # --- models ---
    compute_type: str = Field(default="auto", description="auto: int8_float16 on CUDA, int8 on CPU")
    cpu_threads: int = Field(default=0, ge=0, description="CTranslate2 threads per worker; 0: the cores shared out")
    transcribe_workers: int = Field(
        default=0, ge=0, le=8, description="transcription batches decoded at once; 0: 2 on CPU, 1 on CUDA"
    )
    beam_size: int = Field(default=5, ge=1, le=10)
    batch_size: int = Field(
        default=0, ge=0, le=64,
        description="chunks per transcription batch; 0: 8 on CUDA, 4 on CPU (a batch of 8 holds ~600 MB more)",
    )
    diarizer: Literal["auto", "pyannote", "embedded"] = "auto"
    diarizer_threshold: float = Field(
        default=0.27, gt=0.0, lt=2.0,
        description="embedded diarizer: cosine distance (average linkage over ~3 s segments) at which groups "
        "of speech count as different speakers",
    )
    diarizer_threads: int = Field(
        default=1, ge=1, description="embedded diarizer on CPU: torch threads (it runs beside transcription)"
    )

    # --- chunking (VAD) ---
    min_silence_ms: int = Field(default=600, ge=100, description="cut only in silences longer than this")
    max_chunk_s: float = Field(default=30.0, gt=1.0, le=30.0)
    chunk_overlap_s: float = Field(default=0.2, ge=0.0, le=1.0)
    vad_split_threshold: float = Field(
        default=0.15, gt=0.0, lt=1.0,
        description="Silero probability that starts speech for chunking (quiet, distant speech reaches Whisper)",
    )
    vad_split_neg_threshold: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="chunking: speech ends once the probability stays under this"
    )

    # --- service ---
    host: str = "127.0.0.1"
    port: int = 8000
    allow_open_bind: bool = Field(
        default=False, description="serve without API_KEYS on a HOST that is not loopback (a trusted network only)"
    )
    allowed_hosts: str = Field(
        default="",
        description="comma-separated Host names the server answers (*.example.com, or * for any); empty: "
        "localhost, 127.0.0.1, ::1 and HOST without API_KEYS, any host with them",
    )
    allowed_origins: str = Field(
        default="",
        description="comma-separated origins (https://app.example.com, or *) whose pages may open WebSockets "
        "and send POST/PUT/PATCH/DELETE; empty: the server's own origin only",
    )
    max_upload_mb: float = Field(default=500.0, gt=0)
    max_audio_s: float = Field(default=6 * 3600.0, gt=0, description="longest audio accepted, in seconds")
    log_level: str = "info"

    # --- jobs, webhooks, streaming, API keys ---
    api_keys: SecretStr = Field(
        default=SecretStr(""), description="comma-separated; when set, /api, /v1 and /metrics need one of them"
    )
    require_api_keys: bool = Field(default=False, description="refuse to start without API_KEYS (public endpoints)")
    auth_failures_per_min: int = Field(
        default=10, ge=0,
        description="wrong API keys per client address a minute; past it wrong ones get 429 (a right one passes); 0: off",
    )
    live_ticket_ttl_s: int = Field(
        default=30, ge=1, le=300, description="a live ticket (POST /api/live/tickets) opens one WebSocket this long"
    )
    rate_limit_per_min: int = Field(default=0, ge=0, description="requests a minute per API key or address; 0: off")
    rate_limit_burst: int = Field(default=0, ge=0, description="largest burst; 0: RATE_LIMIT_PER_MIN")
    rate_limit_storage: str = Field(
        default="memory://", description="where rate-limit counters live: memory:// or a limits URI (redis://...)"
    )
    job_workers: int = Field(default=1, ge=1, description="jobs run at the same time in the server process")
    job_max_attempts: int = Field(default=3, ge=1, description="runs a crash may interrupt before the job fails")
    job_result_ttl_s: float = Field(default=86400.0, gt=0, description="ended jobs (and their uploads) kept this long")
    job_lease_s: float = Field(
        default=60.0, ge=1,
        description="a running job's lease, renewed by its server's heartbeats; another server (or a restart) "
        "takes the job over only once it lapsed",
    )
    clip_ttl_s: float = Field(
        default=86400.0, gt=0,
        description="clips uploaded with POST /api/audio are deleted this long after upload (kept while a "
        "queued or running job uses them); clips uploaded with a job go with the job",
    )
    storage_quota_mb: float = Field(
        default=4096.0, ge=0,
        description="stored clips (uploads and their PCM copies) per API key (one owner when keys are off); "
        "past it, uploads get 413 storage_quota_exceeded; 0: no quota",
    )
    job_wait_max_s: float = Field(default=30.0, ge=0, description="longest a wait=true request waits before a 202")
    heartbeat_s: float = Field(default=10.0, gt=0, description="streaming: heartbeat line after this long without one")

    # --- live streaming (/v1/realtime and /ws/stream) ---
    stream_partial_model: str = Field(default="tiny.en", description="live partials' fast model")
    stream_final_model: str = Field(default="", description="live finals' model; empty: WHISPER_MODEL")
    stream_silence_ms: int = Field(default=600, ge=100, le=5000, description="silence that closes an utterance")
    stream_max_utterance_s: float = Field(default=30.0, gt=1.0, le=30.0, description="longest utterance")
    stream_partial_interval_ms: int = Field(default=500, ge=100, description="a partial every this much audio")
    stream_vad_threshold: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Silero probability that opens an utterance"
    )
    stream_vad_neg_threshold: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="an utterance closes once the probability stays under this"
    )
    stream_speaker_threshold: float = Field(
        default=0.2, gt=0.0, lt=2.0,
        description="live speakers: cosine distance to every speaker that founds a new one (make eval-live)"
    )
    stream_turn_threshold: float = Field(
        default=0.25, ge=0.0, lt=2.0,
        description="live speakers: cosine distance between the voices before and after a point of an open utterance "
        "that cuts it there (a speaker change); 0: utterances end only at silence (make eval-live)"
    )
    stream_speaker_recluster: float = Field(
        default=0.2, ge=0.0, lt=2.0,
        description="live speakers: after each final the session's recent finals are clustered again up to this "
        "cosine distance, and finals whose speaker changes are relabelled (speaker_update); 0: never (make eval-live)"
    )
    voice_match_threshold: float = Field(
        default=0.825, gt=0.0, lt=1.0,
        description="named speakers: the cosine similarity of a speaker's voice to an enrolled one from which it "
        "takes that name (make eval: the identification set's tune half)",
    )
    voice_min_speech_s: float = Field(
        default=3.0, gt=0, description="an enrolment sample needs at least this much speech (after VAD)"
    )
    voices_max_per_owner: int = Field(default=100, ge=1, description="enrolled voices per API key")
    stream_resume_s: float = Field(default=60.0, ge=0, description="a dropped session waits this long for a resume")
    stream_idle_s: float = Field(default=30.0, gt=0, description="a stream sending no audio this long is closed")
    stream_max_session_s: float = Field(default=4 * 3600.0, gt=0, description="longest live session (audio seconds)")
    stream_max_per_key: int = Field(default=8, ge=1, description="concurrent live streams per API key or address")
    stream_max_frame_bytes: int = Field(default=1 << 20, ge=1024, description="largest binary frame or event")
    stream_max_total: int = Field(
        default=32, ge=1, description="live streams open at once in all, parked ones (waiting for a resume) included"
    )
    stream_opens_per_min: int = Field(
        default=30, ge=0, description="live WebSocket opens (resumes included) a minute per API key or address; 0: off"
    )
    stream_max_wall_s: float = Field(default=16200.0, gt=0, description="longest live session in wall-clock seconds")
    stream_max_speed: float = Field(
        default=4.0, ge=1.0, description="live audio is read at most this many times real time, past STREAM_MAX_LEAD_S"
    )
    stream_max_lead_s: float = Field(
        default=60.0, ge=0, description="audio a live session may take ahead of STREAM_MAX_SPEED x its age"
    )
    stream_min_audio_rate: float = Field(
        default=0.25, ge=0, lt=1.0,
        description="a live connection must send at least this much audio per second open, after STREAM_RATE_GRACE_S; 0: off",
    )
    stream_rate_grace_s: float = Field(default=60.0, ge=0, description="seconds before STREAM_MIN_AUDIO_RATE applies")
    stream_max_outbox: int = Field(
        default=1000, ge=10, description="server events queued for a live client that does not read before it is closed"
    )
    stream_max_events_per_s: float = Field(
        default=100.0, ge=1.0,
        description="frames (audio or events) a live connection may send a second; past it the server waits",
    )
    webhook_secret: SecretStr | None = Field(default=None, description="whsec_<base64>; webhooks are off without it")
    webhook_allow_private: bool = Field(default=False, description="allow private/loopback/link-local webhook hosts")
    webhook_secret_per_key: bool = Field(
        default=False,
        description="sign each API key's webhooks with its own secret, derived from WEBHOOK_SECRET and the key's id "
        "(GET /api/webhooks/secret hands a caller its own); off: WEBHOOK_SECRET signs every webhook",
    )
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_s: float = Field(default=2.0, gt=0, description="first retry delay; doubles each attempt, jittered")
    webhook_backoff_max_s: float = Field(default=600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _resolve_batch_size(self) -> "Settings":
        if self.batch_size == 0:
            self.batch_size = auto_batch_size(self.resolved_device)
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        try:
            import ctranslate2

            return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # noqa: BLE001 - no CUDA runtime at all means CPU
            return "cpu"

    @property
    def resolved_transcribe_workers(self) -> int:
        if self.transcribe_workers:
            return self.transcribe_workers
        # tiny and base models keep about one core busy per decode: two decodes use a CPU better
        return 1 if self.resolved_device == "cuda" else 2

    @property
    def resolved_cpu_threads(self) -> int:
        if self.cpu_threads or self.resolved_device == "cuda":
            return self.cpu_threads
        return max(1, (os.cpu_count() or 1) // self.resolved_transcribe_workers)

    @property
    def resolved_compute_type(self) -> str:
        if self.compute_type != "auto":
            return self.compute_type
        return "int8_float16" if self.resolved_device == "cuda" else "int8"

    @property
    def resolved_diarizer(self) -> str:
        if self.diarizer != "auto":
            return self.diarizer
        return "pyannote" if self.pyannote_model else "embedded"


@lru_cache
def get_settings() -> Settings:
    return Settings()
