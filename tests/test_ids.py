"""One id type for clips, jobs and live sessions: 32 lowercase hex digits, matched whole."""

from __future__ import annotations

import uuid

import pytest

from shared.core.domain import is_id
from shared.jobs.model import InvalidJobId, check_job_id
from shared.media.clip_store import InvalidClipId, check_clip_id


@pytest.mark.parametrize("bad", [None, "", "a" * 31, "a" * 33, "A" * 32, "g" * 32, "a" * 32 + "\n", " " + "a" * 31])
def test_malformed_ids_are_refused(bad):
    assert not is_id(bad)
    with pytest.raises(InvalidClipId):
        check_clip_id(bad)
    with pytest.raises(InvalidJobId):
        check_job_id(bad)


def test_a_new_id_is_one():
    new = uuid.uuid4().hex
    assert is_id(new) and check_clip_id(new) == new and check_job_id(new) == new


def test_the_schema_pattern_refuses_a_trailing_newline_too():
    """ID_PATTERN (OpenAPI, pydantic) keeps `^...$`: in JSON Schema's (and pydantic's Rust) regex `$` is the
    end of the input, so a resumed live session's id with a newline is refused like the others."""
    from pydantic import ValidationError

    from shared.api.live_ws import StreamParams

    assert StreamParams(session="a" * 32).session == "a" * 32
    with pytest.raises(ValidationError):
        StreamParams(session="a" * 32 + "\n")
