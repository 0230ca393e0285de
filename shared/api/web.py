"""The browser page: `/` and its assets (shared/api/static/), served by the API's own app.

No build step and nothing from another origin: the page is plain HTML, CSS and ES modules, and its
Content-Security-Policy tells the browser to load and connect to this origin only (audio also from
`blob:`, the user's own file). The page talks to the public API like any client; `/web/config` tells it
what it cannot find out otherwise (whether keys are needed, the languages the model knows, the job states
in which a job has ended, the live error codes after which the server closes the stream). None of these routes is in the OpenAPI document, and none needs a key (auth
guards /api, /v1 and /metrics).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from shared.core.errors import LIVE_CODES, PageUnavailable
from shared.jobs.model import ENDED
from shared.service.transcription import whisper_languages

STATIC_DIR = Path(__file__).with_name("static")
CSP = "; ".join([
    "default-src 'self'",
    "media-src 'self' blob:",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])  # fmt: skip

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
def page() -> FileResponse:
    index = STATIC_DIR / "index.html"
    if not index.is_file():  # the API still serves; say what is missing rather than a bare 404
        raise PageUnavailable(f"the browser page's files are not installed here ({STATIC_DIR}); the API under /api works")
    return FileResponse(
        index,
        media_type="text/html; charset=utf-8",
        headers={"content-security-policy": CSP, "cache-control": "no-cache", "x-content-type-options": "nosniff"},
    )


@router.get("/web/config")
def config(request: Request) -> dict:
    settings = request.app.state.settings
    english_only = settings.whisper_model.endswith(".en")
    return {
        "api_keys_required": bool(getattr(request.app.state, "api_keys_on", False)),
        "languages": ["en"] if english_only else sorted(whisper_languages()),
        "max_upload_mb": settings.max_upload_mb,
        "terminal_job_states": [s.value for s in ENDED],
        "fatal_live_codes": sorted(e.code for e in LIVE_CODES.values() if e.fatal),
    }


def install_web(app: FastAPI) -> None:
    app.include_router(router)
    # check_dir=False: an install without the assets still serves the API (and `/` says why it cannot)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
