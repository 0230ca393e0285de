"""The typed stage interface (shared/pipeline/stages.py): names, models and worker roles read from it."""

from __future__ import annotations

import pytest

import inspect

from shared.core.config import Settings
from shared.pipeline.models import StageWorker
from shared.pipeline.runner import InProcessRunner
from shared.pipeline.stages import ROLE_STAGES, SERVED_BY, SPECS, Role, Stage, Stages, role_of, stage_of


def test_every_stage_is_served_by_a_split_role():
    """A split layout (one GPU diarizes, the others transcribe) must still run every stage: a new Stage
    whose `@serves` names no split role fails here, not in a request on a two-GPU box."""
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


def test_the_interface_and_the_names_agree():
    """Every Stage is a `Stages` method, and every `Stages` method a Stage: one list, two spellings."""
    methods = {name for name, _ in inspect.getmembers(Stages, inspect.isfunction) if not name.startswith("_")}
    assert methods == {s.value for s in Stage}
    assert all(stage_of(getattr(Stages, s.value)) is s for s in Stage)


def test_the_worker_implements_every_stage_with_its_signature():
    for stage in Stage:
        declared = inspect.signature(getattr(Stages, stage.value))
        implemented = inspect.signature(getattr(StageWorker, stage.value))
        assert list(implemented.parameters) == list(declared.parameters), stage
        assert getattr(StageWorker, stage.value) is not getattr(Stages, stage.value), f"{stage} not implemented"


def test_each_stage_runs_on_a_model_the_worker_can_build():
    assert all(isinstance(getattr(StageWorker, spec.model.value), property) for spec in SPECS.values())


def test_a_runner_is_called_with_the_interface_method_and_gets_the_stage():
    class Echo(InProcessRunner):
        def _submit(self, stage, *args, **kwargs):
            from concurrent.futures import Future

            done: Future = Future()
            done.set_result((stage, args, kwargs))
            return done

    with Echo(StageWorker(Settings(_env_file=None))) as runner:
        assert runner.call(Stages.diarize, "audio", "hints") == (Stage.DIARIZE, ("audio", "hints"), {})
        assert list(runner.map(Stages.transcribe, [1, 2], options="o")) == [
            (Stage.TRANSCRIBE, (1,), {"options": "o"}), (Stage.TRANSCRIBE, (2,), {"options": "o"})]
