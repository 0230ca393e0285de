"""How uvicorn serves the app, the same at every launch point (`python -m shared.api`, `python -m local_dev
serve`; Modal runs its own server and keeps its own logs):

- it refuses to listen on an address other than loopback without API keys (check_bind), unless
  ALLOW_OPEN_BIND says the network in front of it is trusted;
- access log lines (and uvicorn's WebSocket lines) carry the path without its query string, where a
  ticket or a misplaced key would otherwise be written down;
- a WebSocket message may be at most ws_max_size(settings) bytes, decompressed: twice the largest event
  the app accepts, so an oversize frame still gets the app's `frame_too_large` and the session goes on,
  while a message past that (or a small compressed one that would inflate past it) closes the
  connection with 1009 before it is held in memory. uvicorn's own default is 16 MiB;
- at most WS_MAX_QUEUE received messages wait per connection while the app is not reading (a live
  session waiting for room): uvicorn's default of 32 would hold 32 x ws_max_size (~93 MB) per socket.
"""

from __future__ import annotations

import copy
import logging
from ipaddress import ip_address

from uvicorn.config import LOGGING_CONFIG

from shared.api.auth import ConfigurationError, parse_api_keys
from shared.core.config import Settings

WS_EVENT_OVERHEAD = 64 * 1024  # a /v1/realtime append's JSON beyond its base64 audio, with room to spare


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_bind(settings: Settings) -> None:
    """ConfigurationError when HOST is not loopback, API_KEYS is empty and ALLOW_OPEN_BIND is off."""
    if settings.allow_open_bind or is_loopback(settings.host) or parse_api_keys(settings.api_keys):
        return
    raise ConfigurationError(
        f"HOST={settings.host} is not a loopback address and API_KEYS is empty: anyone who can reach this "
        "machine could use the API. Set API_KEYS, or HOST=127.0.0.1, or ALLOW_OPEN_BIND=true if only a "
        "trusted network reaches it (e.g. a container whose port is published on 127.0.0.1)"
    )


def ws_max_size(settings: Settings) -> int:
    """Twice the largest event the app takes: a /v1/realtime append of STREAM_MAX_FRAME_BYTES of audio in
    base64 (4/3 of it) plus its JSON."""
    return 2 * (settings.stream_max_frame_bytes * 4 // 3 + WS_EVENT_OVERHEAD)


def _without_query(value: object) -> object:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.split("?", 1)[0]
    return value


class RedactQueryStrings(logging.Filter):
    """Drops the query string from the paths uvicorn logs (its access lines, its WebSocket lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(a) for a in record.args)
        return True


def log_config() -> dict:
    """uvicorn's logging configuration, with RedactQueryStrings on its access and error loggers."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": RedactQueryStrings}
    for name in ("uvicorn.access", "uvicorn.error"):
        config["loggers"].setdefault(name, {}).setdefault("filters", []).append("redact_query")
    return config


WS_MAX_QUEUE = 4


def uvicorn_options(settings: Settings) -> dict:
    """uvicorn.run's keyword arguments besides the app (check_bind first: ConfigurationError)."""
    check_bind(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "log_config": log_config(),
        "ws_max_size": ws_max_size(settings),
        "ws_max_queue": WS_MAX_QUEUE,
    }
