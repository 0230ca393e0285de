"""The Modal deployment, on one page.

    web (CPU, @modal.asgi_app)  the same FastAPI app as local runs, with a ModalRunner whose stages are
                                methods of the classes below, named after the stage (shared/pipeline/stages.py):
      | Vad.vad_split            -> chunks (CPU)
      | Transcriber.transcribe   -> .map(): one GPU container per batch; live stages on their own models
      | ChunkTranscriber         -> short clips, packed across requests by @modal.batched
      | Diarizer.diarize         -> speaker turns, concurrently with transcription (GPU)
    run_job / deliver_webhook / sweep_jobs (CPU)  jobs: state in a modal.Dict, clips on the Volume
    transcribe_file (CPU), batch, bench            `modal run -m functions.app::batch --src DIR|LIST|URL,...`;
                                                   `::bench --src FILE`: measured RTF -> $ per audio hour

Each class holds a StageWorker (shared/pipeline/models.py), built once per container in @modal.enter;
imports are captured in a memory snapshot, weights cached on a Volume (HF_HOME), the Hugging Face token
comes from a Secret; resources and scaling come from functions/settings.py. Tests run every body in
process through functions/local.py. Deploy: `modal secret create whospoke API_KEYS=<key>
HUGGINGFACE_TOKEN=hf_...`, then `modal deploy -m functions.app` (docs/deployment.md).
"""

# No `from __future__ import annotations`: modal.parameter reads the class annotations as types.
import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import modal

from functions.modal_runner import ModalCalls, ModalRunner, modal_targets, transcribe_packed
from functions.settings import DATA_PATH, MODELS_PATH, get_modal_settings
from images import modal_images
from shared.core.config import Settings
from shared.core.domain import ChunkTranscript, SpeakerHints, TranscribeOptions
from shared.media.pcm import ChunkAudio, PcmRef
from shared.pipeline.models import StageWorker
from shared.pipeline.stages import SPECS, Model, Stage, Stages
from shared.pipeline.transcriber import resolve_whisper_model

if TYPE_CHECKING:
    from functions.modal_jobs import JobWorker

settings = get_modal_settings()
app = modal.App(settings.app_name)

models_volume = modal.Volume.from_name(settings.models_volume, create_if_missing=True)
data_volume = modal.Volume.from_name(settings.data_volume, create_if_missing=True)
jobs_dict = modal.Dict.from_name(settings.jobs_dict, create_if_missing=True)
hf_secret = modal.Secret.from_name(settings.hf_secret)
# The endpoint is public: it is not deployed without API keys (the app refuses /api requests without one).
api_secret = modal.Secret.from_name(settings.api_secret, required_keys=["API_KEYS"])

transcriber_image = modal_images.transcriber_image()
diarizer_image = modal_images.diarizer_image()
light_image = modal_images.light_image()

GPU_ENV = settings.container_env(device="cuda")
CPU_ENV = settings.container_env(device="cpu")
GPU_SNAPSHOT = {"enable_gpu_snapshot": "true"} if settings.gpu_snapshot else {}


def service_settings(**overrides) -> Settings:
    """The service's own Settings, from the environment `container_env` gave this container."""
    s = Settings()
    return s.model_copy(update=overrides) if overrides else s


def _see(*args) -> None:
    """Stages get audio by reference: the PCM file a web or job container wrote on the data Volume.
    A container that started before that commit reloads its view once to see it."""
    items = [a for arg in args for a in (arg if isinstance(arg, list) else [arg])]
    refs = [a.audio if isinstance(a, ChunkAudio) else a for a in items]
    if any(isinstance(r, PcmRef) and not r.exists() for r in refs):
        data_volume.reload()


# --- the stages: one StageWorker per container, a Modal method per stage -----------------------------

# The deployment's one fact about the stages: which class hosts which model. shared/pipeline/stages.py says
# which model each stage runs on, so each class below gets a method named after every stage of its models
# (a new stage on one of these models needs nothing here). The live models run on Transcriber instances
# of their own model (`LIVE_WHISPER`: the Settings field naming it), each with containers of its own.
HOSTS: dict[Model, str] = {
    Model.VAD: "Vad",
    Model.TRANSCRIBER: "Transcriber",
    Model.PARTIAL_TRANSCRIBER: "Transcriber",
    Model.FINAL_TRANSCRIBER: "Transcriber",
    Model.DIARIZER: "Diarizer",
    Model.VOICE_ENCODER: "Diarizer",
}
LIVE_WHISPER = {Model.PARTIAL_TRANSCRIBER: "stream_partial_model", Model.FINAL_TRANSCRIBER: "stream_final_model"}


def _stage_method(stage: Stage):
    def call(self, *args, **kwargs):
        _see(*args)
        return self.worker.run(stage, *args, **kwargs)

    call.__name__ = call.__qualname__ = stage.value
    call.__doc__ = getattr(Stages, stage.value).__doc__
    return modal.method()(call)


class _StageShell:
    """A deployed class: a StageWorker (shared/pipeline/models.py, the one implementation of the stages)
    built in @modal.enter with the models this class hosts, and a Modal method per stage of them."""

    worker = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.models = tuple(m for m, host in HOSTS.items() if host == cls.__name__)
        for stage, spec in SPECS.items():
            if spec.model in cls.models:
                setattr(cls, stage.value, _stage_method(stage))

    def _settings(self) -> Settings:
        return service_settings()

    def _load(self) -> None:
        if self.worker is None:
            self.worker = StageWorker(self._settings())
            for model in self.models:  # each model's property loads it (shared/pipeline/models.py)
                getattr(self.worker, model.value)


# --- transcription (GPU) ---------------------------------------------------------------------------


class _WhisperShell(_StageShell):
    """Loads faster-whisper once per container. `model` (a modal.parameter on each class) overrides
    WHISPER_MODEL, so one deployment can serve several models: Transcriber(model="large-v3-turbo"); every
    stage of the container then runs on that one model. Modal finds the lifecycle hooks below on the
    subclasses (it walks their MRO)."""

    model: str

    @modal.enter(snap=settings.transcriber.memory_snapshot)
    def prepare(self) -> None:
        """Before the snapshot (no GPU, nothing written): import the libraries; the snapshot keeps them.
        Imported here, not at the top: the light image (web, VAD) imports this module without them."""
        import faster_whisper  # noqa: F401
        import faster_whisper.transcribe  # noqa: F401

        if settings.gpu_snapshot:  # alpha: the loaded model itself goes into the snapshot
            self._load()

    @modal.enter()
    def load(self) -> None:
        self._load()

    def _settings(self) -> Settings:
        name = self.model or service_settings().whisper_model
        return service_settings(whisper_model=name, stream_partial_model=name, stream_final_model=name)

    def _load(self) -> None:
        """After the snapshot, on the GPU: weights from the Volume (the first container ever downloads
        them there and commits), then the model."""
        if self.worker is not None:
            return
        from faster_whisper.utils import download_model  # the transcriber image only (see prepare)

        s = self._settings()
        name = resolve_whisper_model(s.whisper_model)
        if not Path(name).is_dir() and s.hf_home:
            download_model(name, cache_dir=str(Path(s.hf_home) / "hub"))
            models_volume.commit()  # the weights stay for the next containers
        super()._load()
        self.worker.transcriber  # noqa: B018 - ChunkTranscriber hosts no stage, but runs this model


_transcriber_kwargs = dict(
    image=transcriber_image,
    volumes={MODELS_PATH: models_volume, DATA_PATH: data_volume},
    secrets=[hf_secret],
    env=GPU_ENV,
    experimental_options=GPU_SNAPSHOT,
    **settings.transcriber.decorator_kwargs(),
)


@app.cls(**_transcriber_kwargs)
class Transcriber(_WhisperShell):
    """Whole batches (the pipeline's batching): `Transcriber().transcribe.map(batches, kwargs=...)`, and
    every other stage on a Whisper model (its methods come from HOSTS)."""

    model: str = modal.parameter(default="")


@app.cls(**_transcriber_kwargs)
class ChunkTranscriber(_WhisperShell):
    """Single chunks, packed by Modal across concurrent calls (other requests' short clips included) into
    one GPU batch of up to `dynamic_batch_max`: where one short clip alone would leave the GPU idle."""

    model: str = modal.parameter(default="")

    @modal.batched(max_batch_size=settings.dynamic_batch_max, wait_ms=settings.dynamic_batch_wait_ms)
    def transcribe(self, chunks: list[ChunkAudio], options: list[TranscribeOptions]) -> list[ChunkTranscript]:
        _see(chunks)
        return transcribe_packed(self.worker.transcriber, chunks, options, settings.transcribe_batch_size)


# --- diarization (GPU) -----------------------------------------------------------------------------


@app.cls(image=diarizer_image, volumes={MODELS_PATH: models_volume, DATA_PATH: data_volume}, secrets=[hf_secret],
         env=GPU_ENV, **settings.diarizer.decorator_kwargs())
class Diarizer(_StageShell):
    """pyannote.audio when PYANNOTE_MODEL is set at deploy time, else the embedded diarizer; live
    speakers' voice encoder beside it."""

    @modal.enter(snap=settings.diarizer.memory_snapshot)
    def prepare(self) -> None:
        # torch exists in the diarizer image only: imported here, the snapshot keeps it (seconds), the GPU comes after
        import torch  # noqa: F401

        import shared.pipeline.diarization  # noqa: F401

    @modal.enter()
    def load(self) -> None:
        self._load()
        models_volume.commit()  # a pyannote pipeline downloaded on the first start stays for the next


# --- VAD splitting (CPU) ---------------------------------------------------------------------------


@app.cls(image=light_image, env=CPU_ENV, volumes={DATA_PATH: data_volume}, **settings.vad.decorator_kwargs())
class Vad(_StageShell):
    """Cuts a clip into <= 30 s chunks at silences (Silero VAD, ONNX on CPU: no torch in this image)."""

    @modal.enter(snap=settings.vad.memory_snapshot)
    def prepare(self) -> None:
        import faster_whisper.vad  # noqa: F401 - Silero VAD's ONNX model, bundled with faster-whisper
        import onnxruntime  # noqa: F401

    @modal.enter()
    def load(self) -> None:
        self._load()


# --- the runner: the pipeline's stages on the classes above ----------------------------------------


def stage_hosts() -> dict[Model, object]:
    """Model -> the deployed object whose containers hold it (HOSTS, with the live models' instances)."""
    live = service_settings()
    return {
        model: globals()[host](**({"model": getattr(live, LIVE_WHISPER[model])} if model in LIVE_WHISPER else {}))
        for model, host in HOSTS.items()
    }


def stage_targets() -> dict:
    return modal_targets(stage_hosts(), ChunkTranscriber())


def build_runner() -> ModalRunner:
    """The pipeline's Runner in the web, job and batch containers: stage calls to the deployed classes.
    (functions/local.py swaps it for one whose calls run in this process: the tests.)"""
    return ModalRunner.from_settings(ModalCalls(stage_targets()), settings)


# --- jobs: state in the Dict, clips on the Volume, work in spawned functions ------------------------

_jobs: "JobWorker | None" = None
_jobs_lock = threading.Lock()


def build_jobs_worker(store_dict, spawn, volume) -> "JobWorker":
    """The job worker over `store_dict` (the jobs Dict), starting run_job and deliver_webhook through
    `spawn(fn)` (ModalSpawn: `fn.spawn(...)`), its clips on `volume` (None: a plain directory).
    Imported here: the GPU images import this module too, without the jobs' and the API's libraries."""
    from functions.dict_job_store import DictJobStore
    from functions.modal_jobs import JobWorker
    from functions.volume_clips import VolumeClipStore

    s = service_settings()
    return JobWorker(
        s,
        DictJobStore(store_dict, lease_s=settings.job_lease_s),
        VolumeClipStore(s.audio_storage_path, volume),
        runner_factory=build_runner,
        spawn_run=spawn(run_job),
        spawn_deliver=spawn(deliver_webhook),
        heartbeat_s=settings.job_heartbeat_s,
        deliver_budget_s=max(30.0, settings.webhooks.timeout_s - 60.0),
        redispatch_after_s=settings.job_redispatch_after_s,
        overdue_after_s=min(120.0, settings.sweep_period_s),
    )


def jobs_worker() -> "JobWorker":
    """One per container, built on first use (web, run_job, deliver_webhook and sweep_jobs share it)."""
    global _jobs
    from functions.modal_jobs import ModalSpawn

    with _jobs_lock:
        if _jobs is None:
            _jobs = build_jobs_worker(jobs_dict, ModalSpawn, data_volume)
        return _jobs


@app.function(image=light_image, volumes={DATA_PATH: data_volume}, env=CPU_ENV, **settings.jobs.decorator_kwargs())
@modal.concurrent(max_inputs=settings.jobs.max_inputs)
def run_job(job_id: str) -> str:
    """Claim the job, load its clip from the Volume, run the pipeline, store the result, spawn the
    webhook delivery. Returns the job's status."""
    return jobs_worker().run(job_id)


# WEBHOOK_SECRET goes in the same Secret as API_KEYS
@app.function(image=light_image, secrets=[api_secret], env=CPU_ENV, **settings.webhooks.decorator_kwargs())
@modal.concurrent(max_inputs=settings.webhooks.max_inputs)
def deliver_webhook(job_id: str) -> str:
    """Deliver one job's webhook with retries; returns its state (delivered, failed, pending)."""
    return jobs_worker().deliver(job_id)


@app.function(
    image=light_image,
    volumes={DATA_PATH: data_volume},
    env=CPU_ENV,
    schedule=modal.Period(seconds=settings.sweep_period_s),
    **settings.sweep.decorator_kwargs(),
)
def sweep_jobs() -> dict:
    """Every sweep_period_s: requeue and respawn jobs of dead workers, respawn lost spawns, hand overdue
    webhooks to a deliverer, delete expired jobs with their uploads."""
    return jobs_worker().sweep()


# --- the web endpoint (CPU) ------------------------------------------------------------------------


def web_settings(s):
    """The deployed endpoint is public: it requires API keys (an empty or unparsable API_KEYS in the
    Secret stops the container from starting)."""
    return s.model_copy(update={"require_api_keys": True})


@app.function(image=light_image, volumes={DATA_PATH: data_volume}, secrets=[api_secret], env=CPU_ENV,
              **settings.web.decorator_kwargs(web=True))
@modal.concurrent(max_inputs=settings.web.max_inputs)
@modal.asgi_app(label=settings.web_label, requires_proxy_auth=settings.web_proxy_auth)
def web():
    """The FastAPI app of local runs, its stages fanned out to the GPU functions, its jobs spawned."""
    from shared.api.app import create_app

    jobs = jobs_worker()
    return create_app(settings=web_settings(jobs.settings), runner=build_runner(), job_store=jobs.store,
                      clip_store=jobs.clips, dispatch=jobs.dispatch, voice_store=jobs.voices)


# --- batch: many files, every output format --------------------------------------------------------

@functools.cache
def _batch_runner() -> ModalRunner:
    """One runner per container, shared by the inputs it runs at once (@modal.concurrent)."""
    return build_runner()


@app.function(image=light_image, env=CPU_ENV, **settings.batch.decorator_kwargs())
@modal.concurrent(max_inputs=settings.batch.max_inputs)
def transcribe_file(source: bytes | str, name: str, options_json: str, formats: list[str]) -> dict:
    """One input of a batch: audio bytes or an http(s) URL -> {"name", "outputs": {format: text}} or
    {"name", "error"} (an error is returned, not raised, so one bad file does not stop the batch)."""
    from functions.batch import transcribe_input

    return transcribe_input(source, name, options_json, formats, _batch_runner(), service_settings())


@app.local_entrypoint()
def batch(src: str, out: str = "transcripts", formats: str = "all", language: str = "", diarize: bool = True,
          num_speakers: int = 0, word_timestamps: bool = False):
    """`modal run -m functions.app::batch --src ./calls` (a folder, a .txt list, or path,URL,...)."""
    from functions.batch import parse_formats, run_batch

    options = TranscribeOptions(diarize=diarize, language=language or None, word_timestamps=word_timestamps,
                                speakers=SpeakerHints(num_speakers=num_speakers or None))
    counts = run_batch(src, out, options, parse_formats(formats), transcribe_file)
    print(f"{counts['done']} transcribed, {counts['skipped']} already there, {counts['failed']} failed -> {out}")
    if counts["failed"]:
        raise SystemExit(1)


@app.local_entrypoint()
def bench(src: str, language: str = "en"):
    """`modal run -m functions.app::bench --src bench-out/bench_conversation.wav`: RTFs and $ per audio h."""
    from functions import costs
    from shared.media.decode import decode

    samples = decode(Path(src).read_bytes()).samples
    rtf = costs.measure(build_runner().calls, samples, batch_size=settings.transcribe_batch_size,
                        options=TranscribeOptions(language=language or None))
    print(f"{rtf['audio_s']:.0f} s of audio, {rtf['chunks']} chunks, {rtf['batches']} batches")
    print(costs.table(costs.deployment_rows(rtf, settings)))
