"""The local worker pool's settings (`python -m local_dev serve`), read once from the environment and
`.env` like the core Settings (shared/core/config.py), which the workers receive; these stay in the serving
process. The names are in `.env.example`'s local_dev section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PoolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    cpu_workers: int = Field(default=2, ge=1, description="worker processes when there is no GPU (or DEVICE=cpu)")
    workers_per_gpu: int = Field(default=1, ge=1, description="worker processes (model copies) per GPU")
    diarize_gpu: int | None = Field(default=None, description="nvidia-smi index of the diarizer GPU; default last")
    batch_merge: Literal["auto", "on", "off"] = Field(
        default="auto", description="merge short transcribe batches of concurrent requests; auto: on GPU workers"
    )
    batch_wait_ms: float = Field(default=20.0, ge=0, description="hold a short batch this long to merge requests")
    worker_inflight: int = Field(default=2, ge=1, description="calls per stage sent ahead to a worker")
    worker_max_attempts: int = Field(default=3, ge=1, description="tries per call across worker crashes")
    worker_preload: bool = Field(default=True, description="load a worker's models before it takes work")
    worker_port: int = Field(default=0, ge=0, description="port workers connect to; 0 picks a free one")
    worker_authkey: SecretStr | None = Field(default=None, description="shared secret of workers; default random")
    docker_image: str = "whospoke-worker:local"


DEFAULT_IMAGE: str = PoolSettings.model_fields["docker_image"].default
