"""The FastAPI app: the same object is served by uvicorn locally and by @modal.asgi_app() on Modal."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from shared.api import clips, jobs, live_ws, openai_compat, realtime, stream, tickets, voices, webhook_secrets
from shared.api.auth import install_auth
from shared.api.error_responses import install_error_handlers
from shared.api.host_and_origin_checks import install_host_and_origin_checks
from shared.api.openapi import install_openapi
from shared.api.ops import install_metrics, meter_audio
from shared.api.ratelimit import install_rate_limit
from shared.api.uploads import BodySizeLimit
from shared.api.web import install_web
from shared.core.config import Settings, get_settings
from shared.jobs.manager import Dispatch, JobManager
from shared.jobs.store import JobStore
from shared.live.registry import LiveHub
from shared.pipeline.models import StageWorker
from shared.pipeline.runner import InProcessRunner, Runner
from shared.service.transcription import TranscriptionService
from shared.media.clip_store import ClipStore
from shared.service.voices import VoiceService
from shared.voices.sqlite_store import VOICES_DB, SqliteVoiceStore
from shared.voices.store import VoiceStore

log = logging.getLogger(__name__)


def default_runner(settings: Settings) -> Runner:
    """Models in this process, loaded now so the first request does not wait for them."""

    return InProcessRunner(StageWorker(settings).load())


def create_app(
    settings: Settings | None = None,
    runner: Runner | None = None,
    job_store: JobStore | None = None,
    *,
    clip_store: ClipStore | None = None,
    dispatch: Dispatch | None = None,
    voice_store: VoiceStore | None = None,
) -> FastAPI:
    """`clip_store`: default, files under AUDIO_STORAGE_PATH. `voice_store`: default, SQLite there too.
    `dispatch`: hand each new job to it (e.g.
    Modal's `.spawn()`) instead of running jobs on threads in this process (see JobManager)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own_runner = runner is None
        active = runner or default_runner(settings)
        meter_audio(active)  # whospoke_audio_seconds_total
        clips = clip_store or ClipStore(settings.audio_storage_path)
        swept = clips.sweep_incoming()
        if swept:
            log.info("removed %d half-received uploads", swept)
        voices = voice_store or SqliteVoiceStore(settings.audio_storage_path / VOICES_DB)
        app.state.service = TranscriptionService(settings, active, clips, voices)
        app.state.voices = VoiceService(settings, app.state.service, voices)
        app.state.jobs = JobManager.open(settings, app.state.service, job_store, dispatch=dispatch)  # default: SQLite
        app.state.live = LiveHub(active, settings)
        try:
            yield
        finally:
            app.state.live.close()
            app.state.jobs.close()
            if own_runner:
                active.close()
            if voice_store is None:
                voices.close()

    app = FastAPI(
        title="whospoke",
        summary="Speech transcription with speaker diarization: who said what, when.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.include_router(clips.router)
    app.include_router(jobs.router)
    app.include_router(voices.router)
    app.include_router(webhook_secrets.router)
    app.include_router(stream.router)
    app.include_router(tickets.router)
    app.include_router(live_ws.router)
    app.include_router(realtime.router)
    app.include_router(openai_compat.router)
    install_web(app)  # the browser page at /
    install_rate_limit(app, settings)  # inside auth: a refused key spends no one's budget
    install_auth(app, settings)
    install_host_and_origin_checks(app, settings)  # before auth: a foreign page or host name spends no ticket
    install_metrics(app)  # outermost: refused requests (401, 429) are counted too
    install_openapi(app, settings)  # error responses of every route, after auth's security schemes

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict:
        """On the event loop, not a worker thread: it answers while every worker thread is busy."""
        return {
            "status": "ok",
            "whisper_model": settings.whisper_model,
            "diarizer": settings.resolved_diarizer,
            "device": settings.resolved_device,
        }

    return app
