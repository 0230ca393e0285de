"""Device discovery and the worker plan: which process goes on which GPU, pinned how."""

from __future__ import annotations

import os

import pytest

from local_dev.gpus import Device, filter_visible, plan_workers, scan_gpus
from local_dev.settings import PoolSettings
from shared.core.config import Settings
from shared.pipeline.stages import ROLE_STAGES, Role, Stage


def S(**values) -> Settings:
    """Settings from these values and defaults only, whatever a developer's .env says."""
    return Settings(_env_file=None, **values)


def plan(settings: Settings, gpus: list[Device] | None = None, *, workers: int | None = None, **pool):
    """The worker plan with these pool settings (CPU_WORKERS, WORKERS_PER_GPU, DIARIZE_GPU) and defaults."""
    return plan_workers(settings, gpus, pool=PoolSettings(_env_file=None, **pool), workers=workers)


def gpu(index: int, name: str = "NVIDIA GeForce RTX 3060") -> Device:
    return Device("cuda", index, name, f"GPU-{index:08d}-aaaa", 12288)


def test_no_gpu_falls_back_to_cpu_workers():
    specs = plan(S(), [], cpu_workers=3)
    assert [s.worker_id for s in specs] == [0, 1, 2]
    assert all(s.device.kind == "cpu" and s.stages == ROLE_STAGES[Role.ALL] for s in specs)
    # hidden from CUDA, and the cores shared out instead of every worker using all of them
    threads = max(1, (os.cpu_count() or 1) // 3)
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" and s.env["OMP_NUM_THREADS"] == str(threads) for s in specs)
    assert specs[0].settings_for(S()).cpu_threads == threads
    assert specs[0].settings_for(S(cpu_threads=7)).cpu_threads == 7  # an explicit value wins
    # the worker processes are the parallel decodes
    assert specs[0].settings_for(S()).transcribe_workers == 1
    assert specs[0].settings_for(S(transcribe_workers=3)).transcribe_workers == 3


def test_workers_argument_overrides_the_cpu_count():
    assert len(plan(S(), [], workers=5, cpu_workers=2)) == 5


def test_this_machine_has_no_gpu_so_serving_uses_cpu_workers():
    if scan_gpus():
        pytest.skip("this machine has a GPU")
    specs = plan(S(), cpu_workers=2)
    assert [s.device.label for s in specs] == ["cpu", "cpu"]


def test_device_cpu_ignores_gpus():
    assert all(s.device.kind == "cpu" for s in plan(S(device="cpu"), cpu_workers=1))


def test_device_cuda_without_a_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="no GPU"):
        plan(S(device="cuda"), [])


def test_one_gpu_runs_every_stage_pinned_by_uuid():
    (spec,) = plan(S(), [gpu(0)])
    assert spec.stages == ROLE_STAGES[Role.ALL]
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "GPU-00000000-aaaa", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    worker_settings = spec.settings_for(S(device="auto"))
    assert worker_settings.device == "cuda" and spec.device.label == "cuda:0 (NVIDIA GeForce RTX 3060)"


def test_two_gpus_diarizer_on_the_second_transcription_on_the_first():
    first, second = plan(S(), [gpu(0), gpu(1, "NVIDIA GeForce RTX 2060")])
    assert first.device.index == 0 and first.stages == ROLE_STAGES[Role.TRANSCRIBE]
    assert second.device.index == 1 and Stage.DIARIZE in second.stages and Stage.TRANSCRIBE not in second.stages
    assert first.env["CUDA_VISIBLE_DEVICES"] != second.env["CUDA_VISIBLE_DEVICES"]


def test_diarize_gpu_setting_picks_the_diarizer_card():
    specs = plan(S(), [gpu(0), gpu(1)], diarize_gpu=0)
    assert [Stage.DIARIZE in s.stages for s in specs] == [True, False]
    with pytest.raises(RuntimeError, match="DIARIZE_GPU=5"):
        plan(S(), [gpu(0), gpu(1)], diarize_gpu=5)


def test_model_pool_per_gpu():
    specs = plan(S(), [gpu(0), gpu(1)], workers_per_gpu=2)
    assert [(s.worker_id, s.device.index) for s in specs] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert len(plan(S(), [gpu(0), gpu(1)], workers=3)) == 6


def test_three_gpus_two_transcribe_one_diarizes():
    specs = plan(S(), [gpu(0), gpu(1), gpu(2)])
    assert [s.stages == ROLE_STAGES[Role.TRANSCRIBE] for s in specs] == [True, True, False]


def test_cuda_visible_devices_of_the_server_limits_the_scan():
    devices = [gpu(0), gpu(1), gpu(2)]
    assert filter_visible(devices, None) == devices
    assert [d.index for d in filter_visible(devices, "2,0")] == [2, 0]
    assert [d.index for d in filter_visible(devices, "GPU-00000001")] == [1]
    assert filter_visible(devices, "") == []
    assert [d.index for d in filter_visible(devices, "1,7,2")] == [1]  # CUDA stops at a bad entry too


def test_workers_are_not_sent_the_api_secrets():
    settings = S(api_keys="k-123", webhook_secret="whsec_c2VjcmV0", huggingface_token="hf_x")
    sent = plan(settings, [], workers=1)[0].settings_for(settings)
    assert sent.api_keys.get_secret_value() == "" and sent.webhook_secret is None
    assert sent.huggingface_token.get_secret_value() == "hf_x"  # the pyannote diarizer needs it
    assert "hf_x" not in repr(sent) and "k-123" not in repr(settings)  # secrets stay out of logs
