"""Every knob of the Modal deployment in one place: GPU types, timeouts, autoscaling, retries, batching.

Read at `modal deploy` time from environment variables (or `.env`) prefixed `WHOSPOKE_MODAL_` (nested with `__`),
e.g. `WHOSPOKE_MODAL_TRANSCRIBER__GPU=L4 WHOSPOKE_MODAL_WHISPER_MODEL=large-v3-turbo modal deploy ...`.
The values in force at deploy time travel into the containers (`container_env`), so the code that runs
there (the Modal runner's routing, the service's own Settings) sees the same configuration.

The service's own settings (shared.core.config.Settings: WHISPER_MODEL, DEVICE, PYANNOTE_MODEL...) are not
repeated here: the few a deployment chooses (`DEPLOYED_DEFAULTS`) are Settings' own fields (type, bounds,
description) with the deployment's defaults, and `container_env` hands them to every function, where
Settings applies its own rules to them (the diarizer from PYANNOTE_MODEL, the compute type on CPU).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import modal
from pydantic import BaseModel, Field, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.core.config import Settings, auto_batch_size

SETTINGS_ENV = "WHOSPOKE_MODAL_SETTINGS_JSON"  # the deploy-time settings, as seen inside containers

MODELS_PATH = "/models"  # model weights Volume (HF_HOME lives under it)
DATA_PATH = "/data"  # clips and results Volume


class FunctionSpec(BaseModel):
    """Resources and scaling of one deployable function or class."""

    gpu: str | None = None
    cpu: float | None = None
    memory_mib: int | None = None
    timeout_s: int = Field(default=600, ge=10, le=24 * 3600)
    startup_timeout_s: int | None = Field(default=None, description="model load on a cold start; None: timeout_s")
    scaledown_window_s: int = Field(default=60, ge=2, le=3600, description="idle seconds before a container stops")
    min_containers: int = Field(default=0, ge=0, description="0: nothing runs (or costs) while idle")
    max_containers: int = Field(default=10, ge=1)
    retries: int = Field(default=2, ge=0, le=10, description="Modal re-runs a failed input this often")
    max_inputs: int | None = Field(default=None, ge=1, description="@modal.concurrent: inputs per container")
    memory_snapshot: bool = True

    def decorator_kwargs(self, *, web: bool = False) -> dict[str, Any]:
        """Keyword arguments for @app.function / @app.cls."""
        kwargs: dict[str, Any] = {
            "gpu": self.gpu,
            "cpu": self.cpu,
            "memory": self.memory_mib,
            "timeout": self.timeout_s,
            "startup_timeout": self.startup_timeout_s,
            "scaledown_window": self.scaledown_window_s,
            "min_containers": self.min_containers,
            "max_containers": self.max_containers,
            "enable_memory_snapshot": self.memory_snapshot,
        }
        if not web and self.retries:  # Modal refuses retries on web endpoints
            kwargs["retries"] = modal.Retries(max_retries=self.retries, backoff_coefficient=2.0, initial_delay=1.0)
        return kwargs


class TranscriberSpec(FunctionSpec):
    gpu: str | None = "T4"
    memory_mib: int | None = 8192
    timeout_s: int = 600
    startup_timeout_s: int | None = 900  # the first container ever downloads large-v3 (~3 GB) to the Volume
    max_containers: int = 20


class DiarizerSpec(FunctionSpec):
    gpu: str | None = "T4"
    memory_mib: int | None = 8192
    timeout_s: int = 1800  # one call diarizes a whole clip
    startup_timeout_s: int | None = 900
    max_containers: int = 10


class VadSpec(FunctionSpec):
    cpu: float | None = 2.0
    memory_mib: int | None = 4096
    timeout_s: int = 900
    max_containers: int = 20


class WebSpec(FunctionSpec):
    cpu: float | None = 2.0
    memory_mib: int | None = 4096
    timeout_s: int = 1800  # a synchronous request waits for its whole transcript
    scaledown_window_s: int = 120
    # Several containers: nothing a request needs lives in one container any more. Clips are on the
    # Volume (committed after each write, reloaded on a miss: functions/volume_clips.py), jobs in the
    # Dict (functions/dict_job_store.py), and jobs run in run_job containers, not on web threads.
    max_containers: int = 10
    retries: int = 0  # Modal refuses retries on web endpoints
    max_inputs: int | None = 32  # requests mostly wait on GPU functions


class JobSpec(FunctionSpec):
    """run_job: one transcription job per input. It decodes the clip and waits on the GPU functions."""

    cpu: float | None = 2.0
    memory_mib: int | None = 8192  # a few decoded hours at once (230 MB of float32 per hour)
    timeout_s: int = 3600  # longer than the longest stage call (the diarizer's 1800 s)
    max_containers: int = 20
    retries: int = 0  # a dead run's job is requeued by the sweep once its lease lapses (functions/modal_jobs.py)
    max_inputs: int | None = 8


class WebhookSpec(FunctionSpec):
    """deliver_webhook: one job's webhook, attempt after attempt; it mostly sleeps between them."""

    cpu: float | None = 0.25
    memory_mib: int | None = 512
    timeout_s: int = 900  # the deliverer's budget is this minus a margin; later attempts go to the sweep
    max_containers: int = 5
    retries: int = 0  # the pending state is in the Dict: the sweep picks up a lost deliverer
    max_inputs: int | None = 100


class SweepSpec(FunctionSpec):
    """sweep_jobs: the scheduled janitor (lapsed leases, lost spawns, overdue webhooks, expiry)."""

    cpu: float | None = 0.25
    memory_mib: int | None = 1024
    timeout_s: int = 600
    scaledown_window_s: int = 2  # it runs every few minutes: stop at once
    max_containers: int = 1  # one sweep at a time
    retries: int = 0  # the next period runs it again


class BatchSpec(FunctionSpec):
    cpu: float | None = 2.0
    memory_mib: int | None = 8192
    timeout_s: int = 3600
    scaledown_window_s: int = 30
    max_containers: int = 50
    retries: int = 1
    max_inputs: int | None = 4


# The service's Settings fields a deployment chooses, with its defaults (a T4 serving large-v3 in fp16: T4s (sm75)
# have fast fp16 tensor cores; int8_float16 trades accuracy for memory). WHOSPOKE_MODAL_WHISPER_MODEL=... at
# deploy time becomes WHISPER_MODEL=... in every container.
DEPLOYED_DEFAULTS: dict[str, Any] = {
    "whisper_model": "large-v3",
    "compute_type": "float16",
    "beam_size": 5,
    "pyannote_model": None,  # set to use pyannote; unset: the embedded diarizer
}


def _service_fields() -> dict[str, Any]:
    fields = {name: Settings.model_fields[name] for name in DEPLOYED_DEFAULTS}
    return {
        name: (field.annotation, FieldInfo.merge_field_infos(field, default=DEPLOYED_DEFAULTS[name]))
        for name, field in fields.items()
    }


DeployedService = create_model("DeployedService", __base__=BaseSettings, **_service_fields())


class ModalSettings(DeployedService):  # type: ignore[misc,valid-type] - its fields are Settings' (above)
    model_config = SettingsConfigDict(
        env_prefix="WHOSPOKE_MODAL_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    app_name: str = "whospoke"
    web_label: str | None = Field(default=None, description="subdomain label of the web endpoint; None: Modal's")

    # --- named Modal objects ---
    # One Secret by default (one `modal secret create`); name two to keep the API keys from the model
    # containers and the Hugging Face token from the web container.
    hf_secret: str = Field(default="whospoke", description="Secret with HUGGINGFACE_TOKEN (model classes)")
    api_secret: str = Field(default="whospoke", description="Secret with API_KEYS (the web endpoint)")
    web_proxy_auth: bool = Field(default=False, description="also require Modal-Key/Modal-Secret headers")
    models_volume: str = "whospoke-models"
    data_volume: str = "whospoke-data"
    jobs_dict: str = "whospoke-jobs"

    # --- what the containers run: DEPLOYED_DEFAULTS (whisper_model, compute_type, beam_size, pyannote_model) ---

    # --- batching ---
    # The policy's billed-GPU size (shared/core/config.py auto_batch_size: twice the local CUDA default).
    transcribe_batch_size: int = Field(
        default=auto_batch_size("cuda", billed_gpu=True), ge=1, le=64,
        description="chunks per GPU batch (pipeline side)",
    )
    dynamic_batch_max: int = Field(
        default=auto_batch_size("cuda", billed_gpu=True), ge=1, le=1000, description="@modal.batched max_batch_size"
    )
    dynamic_batch_wait_ms: int = Field(default=200, ge=0, le=10_000, description="@modal.batched wait_ms")
    gpu_snapshot: bool = Field(default=False, description="Modal's alpha GPU memory snapshots (model on the GPU)")

    # --- the runner (in the web / batch containers) ---
    # Threads only wait on remote calls; each request holds one for its whole diarization, so there are
    # several per concurrent request (web max_inputs 32).
    runner_threads: int = Field(default=128, ge=1, description="stage calls in flight per web/batch container")
    runner_retries: int = Field(default=1, ge=0, le=5, description="re-sends of inputs lost to infrastructure")

    # --- functions (one class each, so `..._TRANSCRIBER__GPU=L4` keeps the other defaults) ---
    transcriber: TranscriberSpec = Field(default_factory=TranscriberSpec)
    diarizer: DiarizerSpec = Field(default_factory=DiarizerSpec)
    vad: VadSpec = Field(default_factory=VadSpec)
    web: WebSpec = Field(default_factory=WebSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    jobs: JobSpec = Field(default_factory=JobSpec)
    webhooks: WebhookSpec = Field(default_factory=WebhookSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec)

    # --- jobs (state in the Dict `jobs_dict`, run by run_job; see functions/modal_jobs.py) ---
    job_lease_s: float = Field(default=120.0, ge=10, description="a running job's worker silent this long is dead")
    job_heartbeat_s: float = Field(default=30.0, ge=1, description="a job worker's sign of life; well under the lease")
    job_redispatch_after_s: float = Field(default=600.0, ge=60, description="spawn a job again if still queued")
    sweep_period_s: float = Field(default=300.0, ge=60, description="sweep_jobs runs this often")

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> "ModalSettings":
        if self.job_heartbeat_s * 3 > self.job_lease_s:
            raise ValueError("job_heartbeat_s must be at most a third of job_lease_s (missed beats need slack)")
        return self

    def container_env(self, *, device: str = "cuda") -> dict[str, str]:
        """Environment for every container: the service's Settings, plus these settings themselves."""
        chosen = {name: getattr(self, name) for name in DEPLOYED_DEFAULTS}
        if device != "cuda":
            chosen["compute_type"] = "auto"  # Settings' rule: int8 on CPU
        env = {name.upper(): str(value) for name, value in chosen.items() if value is not None}
        env.update({
            "BATCH_SIZE": str(self.transcribe_batch_size),
            "DEVICE": device,
            "HF_HOME": f"{MODELS_PATH}/hf",
            "AUDIO_STORAGE_PATH": DATA_PATH,  # the clip store keeps clips/ and incoming/ under it
            SETTINGS_ENV: self.model_dump_json(),
        })
        return env


@lru_cache
def get_modal_settings() -> ModalSettings:
    """Inside a container: the deploy-time settings it was given; elsewhere: the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        return ModalSettings.model_validate_json(raw)
    return ModalSettings()
