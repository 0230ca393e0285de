"""`python -m shared.api`: serve the API in-process with uvicorn (local_dev serve adds worker pools)."""

import logging

import uvicorn

from shared.api.app import create_app
from shared.config import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
