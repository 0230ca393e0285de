"""Serve the Modal web endpoint's app on this machine, without a Modal account (tests/test_modal_web.py).

    PYTHONPATH=tests python -m modal_local_serve    # HOST, PORT, AUDIO_STORAGE_PATH... as for `python -m shared.api`

The app is what the deployed `web` function returns (`web.local()`: the same FastAPI app as local runs,
with the Modal runner), and its stage calls go through `.local()` on the deployed classes instead of
`.remote()`/`.map()`: every Modal method body runs, in this process, on this machine's CPU or GPU. Jobs
take the deployed path too (tests/modal_doubles.py's LocalDeployment): the endpoint hands them to
`run_job` and webhooks to `deliver_webhook`, both with `.local()` on a thread instead of `.spawn()`,
over an in-memory stand-in of the job Dict (jobs are lost when the process stops).
"""

from __future__ import annotations

import logging


def main() -> None:
    import uvicorn
    from modal_doubles import LocalDeployment

    from functions import app as modal_app
    from shared.core.config import get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    LocalDeployment().build()
    uvicorn.run(modal_app.web.local(), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
