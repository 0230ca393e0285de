"""`python -m shared.api`: serve the API in-process with uvicorn (local_dev serve adds worker pools)."""

import logging
import sys

import uvicorn

from shared.api.app import create_app
from shared.api.auth import ConfigurationError
from shared.api.serving import uvicorn_options
from shared.core.config import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = uvicorn_options(settings)  # before the models load: an open bind without keys is refused
        app = create_app(settings)
    except ConfigurationError as exc:  # fails closed, with the reason and no traceback
        logging.getLogger("shared.api").error("not starting: %s", exc)
        sys.exit(2)
    uvicorn.run(app, **options)


if __name__ == "__main__":
    main()
