"""Shared fixtures: models loaded once per test session, and a real server on loopback."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub

from live_server import live_server  # noqa: E402

from shared.core.config import Settings  # noqa: E402


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    return Settings(_env_file=None, audio_storage_path=tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="session")
def worker(settings):
    from shared.pipeline.models import StageWorker

    return StageWorker(settings).load()


@pytest.fixture(scope="session")
def runner(worker):
    from shared.pipeline.runner import InProcessRunner

    with InProcessRunner(worker) as r:
        yield r


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real uvicorn server for the API tests of the whole session."""
    with live_server(tmp_path_factory.mktemp("server")) as s:
        yield s
