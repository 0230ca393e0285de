"""Worker roles: the one table of which worker serves which stage (shared/pipeline/stages.py)."""

from __future__ import annotations

import pytest

from shared.pipeline.stages import ROLE_STAGES, SERVED_BY, Role, Stage, role_of


def test_every_stage_is_served_by_a_split_role():
    """A split layout (one GPU diarizes, the others transcribe) must still run every stage: a new Stage
    without its line in SERVED_BY fails here, not in a request on a two-GPU box."""
    split = set(ROLE_STAGES[Role.TRANSCRIBE]) | set(ROLE_STAGES[Role.DIARIZE])
    assert split == set(Stage) == set(ROLE_STAGES[Role.ALL])
    assert set(SERVED_BY) == set(Stage)


def test_split_roles_do_not_share_the_models():
    """The point of the split: Whisper on the transcribing GPUs only, the diarizer on its own."""
    assert Stage.DIARIZE not in ROLE_STAGES[Role.TRANSCRIBE]
    assert not {Stage.TRANSCRIBE, Stage.DETECT_LANGUAGE} & set(ROLE_STAGES[Role.DIARIZE])


def test_role_of_inverts_the_table_whatever_the_order():
    for role, stages in ROLE_STAGES.items():
        assert role_of(tuple(reversed(stages))) is role
    with pytest.raises(ValueError, match="no worker role"):
        role_of((Stage.TRANSCRIBE,))
