"""The Modal app's definitions, read back without credentials.

`.info()` (modal 1.6) reports what a function asks for before it is deployed: GPUs, CPU, memory,
timeouts, retries, Volumes, Secrets, batching, concurrency, web endpoint. Autoscaling (scaledown_window,
min/max_containers) and memory snapshots are not in `.info()`; they are read from the definition Modal
would send at deploy time (`deploy_definition`, private to modal, so tied to the pinned modal==1.6.4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import modal
import pytest
from modal._utils.async_utils import synchronizer

from functions import app as modal_app
from functions.settings import DATA_PATH, MODELS_PATH, SETTINGS_ENV, ModalSettings, get_modal_settings
from shared.core.config import Settings

REPO = Path(__file__).resolve().parent.parent
S = get_modal_settings()
ENV_SECRET_KEYS = {"WHISPER_MODEL", "DEVICE", "HF_HOME", "AUDIO_STORAGE_PATH", "BATCH_SIZE", SETTINGS_ENV}


def deploy_definition(obj) -> dict:
    """What `@app.function`/`@app.cls` captured for the deploy request that `.info()` does not show."""
    if isinstance(obj, modal.Cls):
        obj = obj._get_class_service_function()
    impl = synchronizer._translate_in(obj)
    load = impl._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    auto = cells["autoscaler_settings"]
    return {
        "min_containers": auto.min_containers,
        "max_containers": auto.max_containers,
        "scaledown_window": auto.scaledown_window,
        "enable_memory_snapshot": cells["enable_memory_snapshot"],
        "experimental_options": dict(cells["experimental_options"] or {}),
    }


def info_of(obj):
    """FunctionInfo of a function, or of a class through one of its methods."""
    return obj.info()


def _secret_reprs(info) -> list[str]:
    return list(info.secrets)


CLASSES = {
    "Transcriber": (modal_app.Transcriber().transcribe, S.transcriber),
    "ChunkTranscriber": (modal_app.ChunkTranscriber().transcribe, S.transcriber),
    "Diarizer": (modal_app.Diarizer().diarize, S.diarizer),
    "Vad": (modal_app.Vad().vad_split, S.vad),
}
FUNCTIONS = {
    "web": (modal_app.web, S.web),
    "transcribe_file": (modal_app.transcribe_file, S.batch),
}
ALL = {**CLASSES, **FUNCTIONS}


@pytest.mark.parametrize("name", ["Transcriber", "ChunkTranscriber", "Diarizer"])
def test_gpu_classes_ask_for_a_t4(name):
    info = info_of(CLASSES[name][0])
    assert info.gpus == [("T4", 1)]


@pytest.mark.parametrize("name", ["Vad", "web", "transcribe_file"])
def test_cpu_functions_ask_for_no_gpu(name):
    fn, spec = ALL[name]
    info = info_of(fn)
    assert info.gpus == []
    assert info.cpu == spec.cpu == 2.0


@pytest.mark.parametrize("name", sorted(ALL))
def test_timeouts_memory_and_retries_come_from_the_settings_module(name):
    fn, spec = ALL[name]
    info = info_of(fn)
    assert info.timeout == spec.timeout_s
    assert info.startup_timeout == (spec.startup_timeout_s or spec.timeout_s)
    assert info.memory_mib == spec.memory_mib
    assert info.max_retries == (spec.retries or None)


@pytest.mark.parametrize("name", sorted(ALL))
def test_autoscaling_costs_nothing_while_idle(name):
    fn, spec = ALL[name]
    d = deploy_definition(modal_app.__dict__[name] if name in CLASSES else fn)
    assert d["min_containers"] == 0  # scale to zero: an idle deployment costs nothing
    assert d["max_containers"] == spec.max_containers
    assert d["scaledown_window"] == spec.scaledown_window_s


@pytest.mark.parametrize("name", sorted(ALL))
def test_memory_snapshots_are_on(name):
    fn, _ = ALL[name]
    d = deploy_definition(modal_app.__dict__[name] if name in CLASSES else fn)
    assert d["enable_memory_snapshot"] is True
    assert d["experimental_options"] == {}  # GPU snapshots (alpha) only when asked for


def test_model_classes_cache_weights_on_the_models_volume_and_get_the_token_secret():
    for name in ("Transcriber", "ChunkTranscriber", "Diarizer"):
        info = info_of(CLASSES[name][0])
        assert set(info.volumes) == {MODELS_PATH, DATA_PATH}  # data: they read clip audio by reference
        assert info.volumes[DATA_PATH].name == S.data_volume
        assert info.volumes[MODELS_PATH].name == S.models_volume
        assert info.volumes[MODELS_PATH].read_only is False  # the first container downloads into it
        assert f"modal.Secret.from_name('{S.hf_secret}')" in _secret_reprs(info)


def test_cpu_functions_see_no_model_token():
    for name in ("Vad", "transcribe_file"):
        assert not any("from_name" in s for s in _secret_reprs(info_of(ALL[name][0]))), name


def test_the_public_endpoint_is_not_deployed_without_api_keys():
    info = info_of(modal_app.web)
    assert f"modal.Secret.from_name('{S.api_secret}')" in _secret_reprs(info)
    load = synchronizer._translate_in(modal_app.api_secret)._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    assert cells["name"] == S.api_secret and cells["required_keys"] == ["API_KEYS"]
    assert info.web_info.unauthenticated is (not S.web_proxy_auth)  # the app's API keys guard /api


def test_modal_cli_finds_the_app_and_the_batch_entry_point():
    """What `modal deploy -m functions.app` and `modal run -m functions.app::batch` import, offline."""
    from modal.cli.import_refs import import_and_filter, import_app_from_ref, parse_import_ref

    ref = parse_import_ref("functions.app", use_module_mode=True, command="modal deploy")
    assert import_app_from_ref(ref, base_cmd="modal deploy").name == S.app_name
    run_ref = parse_import_ref("functions.app::batch", use_module_mode=True, command="modal run")
    runnable, commands, _ = import_and_filter(run_ref, base_cmd="modal run")
    assert runnable is not None and "batch" in {name for c in commands for name in c.names}


def test_every_function_gets_the_service_environment():
    for name, (fn, _) in ALL.items():
        env_secrets = [s for s in _secret_reprs(info_of(fn)) if s.startswith("Secret.from_dict")]
        assert len(env_secrets) == 1, name
        assert all(key in env_secrets[0] for key in ENV_SECRET_KEYS), (name, env_secrets)


def _service(env: dict[str, str]) -> Settings:
    """The service's Settings as a container builds them from its environment."""
    return Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k != SETTINGS_ENV})


def test_container_environment():
    gpu, cpu = S.container_env(device="cuda"), S.container_env(device="cpu")
    assert gpu["DEVICE"] == "cuda" and cpu["DEVICE"] == "cpu"
    assert gpu["HF_HOME"].startswith(MODELS_PATH + "/")  # weights land on the Volume
    assert gpu["AUDIO_STORAGE_PATH"] == DATA_PATH
    assert gpu["BATCH_SIZE"] == str(S.transcribe_batch_size)
    assert ModalSettings.model_validate_json(gpu[SETTINGS_ENV]) == S
    on_gpu, on_cpu = _service(gpu), _service(cpu)
    assert (on_gpu.whisper_model, on_gpu.beam_size) == (S.whisper_model, S.beam_size)
    assert on_gpu.resolved_compute_type == S.compute_type and on_cpu.resolved_compute_type == "int8"
    assert on_gpu.resolved_diarizer == "embedded" and "PYANNOTE_MODEL" not in gpu
    with_pyannote = ModalSettings(pyannote_model="pyannote/speaker-diarization-community-1").container_env()
    assert _service(with_pyannote).resolved_diarizer == "pyannote"  # Settings' rule, not restated here
    assert with_pyannote["PYANNOTE_MODEL"] == "pyannote/speaker-diarization-community-1"


def test_the_deployment_chooses_the_service_settings_with_their_own_bounds(monkeypatch):
    """WHOSPOKE_MODAL_<FIELD> at deploy time, Settings' types and bounds, the deployment's defaults."""
    monkeypatch.setenv("WHOSPOKE_MODAL_WHISPER_MODEL", "large-v3-turbo")
    assert ModalSettings(_env_file=None).whisper_model == "large-v3-turbo"
    assert ModalSettings.model_fields["beam_size"].metadata == Settings.model_fields["beam_size"].metadata
    with pytest.raises(ValueError):
        ModalSettings(beam_size=Settings.model_fields["beam_size"].metadata[-1].le + 1)


@pytest.mark.parametrize("name", ["Vad", "Transcriber", "Diarizer"])
def test_each_class_serves_the_stages_of_the_models_it_hosts(name):
    """Methods are read from the stage interface: one per stage whose model the class hosts, by its name."""
    from shared.pipeline.stages import SPECS

    hosted = {m for m, host in modal_app.HOSTS.items() if host == name}
    info = info_of(CLASSES[name][0])
    assert sorted(info.method_names) == sorted(s.value for s, spec in SPECS.items() if spec.model in hosted)
    assert info.batching_info is None and info.concurrency_info is None  # one batch at a time


def test_every_model_has_a_host():
    from shared.pipeline.stages import Model

    assert set(modal_app.HOSTS) == set(Model) and set(modal_app.stage_hosts()) == set(Model)


def test_chunk_transcriber_batches_across_calls():
    info = info_of(CLASSES["ChunkTranscriber"][0])
    assert info.method_names == ["transcribe"]
    assert info.batching_info.max_batch_size == S.dynamic_batch_max
    assert info.batching_info.wait_ms == S.dynamic_batch_wait_ms


def test_vad_is_a_cpu_class_that_reads_clips_from_the_data_volume():
    info = info_of(CLASSES["Vad"][0])
    assert set(info.volumes) == {DATA_PATH} and info.memory_mib == 4096
    assert info.volumes[DATA_PATH].name == S.data_volume


def test_the_web_endpoint():
    info = info_of(modal_app.web)
    assert info.web_info is not None and info.web_info.method is None  # an ASGI app, every method
    assert info.concurrency_info.max_inputs == S.web.max_inputs == 32  # requests mostly wait on GPUs
    assert set(info.volumes) == {DATA_PATH}
    assert info.volumes[DATA_PATH].name == S.data_volume


def test_the_batch_function_runs_a_few_files_per_container():
    info = info_of(modal_app.transcribe_file)
    assert info.concurrency_info.max_inputs == S.batch.max_inputs == 4
    assert info.web_info is None and info.max_retries == 1


def test_the_image_of_each_family():
    images = {
        "Transcriber": modal_app.transcriber_image,
        "ChunkTranscriber": modal_app.transcriber_image,
        "Diarizer": modal_app.diarizer_image,
        "Vad": modal_app.light_image,
        "web": modal_app.light_image,
        "transcribe_file": modal_app.light_image,
    }
    for name, image in images.items():
        obj = modal_app.__dict__[name]
        if isinstance(obj, modal.Cls):
            obj = obj._get_class_service_function()
        assert synchronizer._translate_in(obj)._spec.image is synchronizer._translate_in(image), name


def test_batch_entry_point_is_registered():
    assert "batch" in modal_app.app._local_state.local_entrypoints


def _definitions_with_env(env: dict[str, str]) -> dict:
    """Import the app in a fresh interpreter with deploy-time overrides; report what it defined."""
    code = """
import json
from functions import app as a
t = a.Transcriber().transcribe.info()
c = a.ChunkTranscriber().transcribe.info()
w = a.web.info()
print(json.dumps({"gpus": t.gpus, "timeout": t.timeout, "retries": t.max_retries,
                  "batch": [c.batching_info.max_batch_size, c.batching_info.wait_ms],
                  "web_inputs": w.concurrency_info.max_inputs}))
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WHOSPOKE_MODAL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_deploy_time_overrides_reach_the_definitions():
    d = _definitions_with_env(
        {
            "WHOSPOKE_MODAL_TRANSCRIBER__GPU": "L4",
            "WHOSPOKE_MODAL_TRANSCRIBER__TIMEOUT_S": "1200",
            "WHOSPOKE_MODAL_TRANSCRIBER__RETRIES": "0",
            "WHOSPOKE_MODAL_DYNAMIC_BATCH_MAX": "8",
            "WHOSPOKE_MODAL_WEB__MAX_INPUTS": "100",
        }
    )
    assert d == {"gpus": [["L4", 1]], "timeout": 1200, "retries": None, "batch": [8, 200], "web_inputs": 100}


def test_containers_define_the_app_from_the_deploy_time_settings():
    """Inside a container only the serialized settings exist; the app must come out the same."""
    deployed = ModalSettings(transcriber={"gpu": "A10G"}, dynamic_batch_max=4)
    d = _definitions_with_env({SETTINGS_ENV: deployed.model_dump_json()})
    assert d["gpus"] == [["A10G", 1]] and d["batch"] == [4, 200]


def test_bad_settings_are_refused_before_deploy():
    with pytest.raises(ValueError):
        ModalSettings(transcriber={"scaledown_window_s": 1})  # Modal allows 2..3600
    with pytest.raises(ValueError):
        ModalSettings(dynamic_batch_max=0)


def test_cost_per_audio_hour_formula():
    from functions import costs

    spec = ModalSettings(_env_file=None).transcriber  # T4, 8 GiB, scaledown 60 s
    rate = costs.GPU_PER_S["T4"] + costs.DEFAULT_CPU * costs.CPU_CORE_PER_S + 8 * costs.MEMORY_GIB_PER_S
    assert costs.per_second(spec) == pytest.approx(rate)
    c = costs.per_audio_hour("t", spec, 0.05, containers=8, cold_start_s=20)
    assert c.busy_s == pytest.approx(180)
    assert c.warm_usd == pytest.approx(180 * rate)
    assert c.cold_usd == pytest.approx((180 + 8 * (20 + 60)) * rate)
    assert costs.per_second(ModalSettings(_env_file=None).vad) == pytest.approx(
        2 * costs.CPU_CORE_PER_S + 4 * costs.MEMORY_GIB_PER_S
    )


def test_the_deployed_endpoint_requires_api_keys(monkeypatch, tmp_path):
    """The web endpoint's settings require keys: an empty API_KEYS in the Secret stops it from starting
    instead of serving an open API. In process (functions/local.py) it runs as configured."""
    from functions.local import in_process
    from shared.api.app import create_app
    from shared.api.auth import ConfigurationError
    from shared.core.config import Settings

    local = Settings(_env_file=None, audio_storage_path=tmp_path)
    with in_process():
        assert modal_app.web_settings(local) is local  # tests and local_serve: as configured
    deployed = modal_app.web_settings(local)
    assert deployed.require_api_keys is True
    with pytest.raises(ConfigurationError, match="API_KEYS is empty"):
        create_app(deployed)
    keyed = modal_app.web_settings(Settings(_env_file=None, audio_storage_path=tmp_path, api_keys="k"))
    assert keyed.require_api_keys and keyed.api_keys.get_secret_value() == "k"


@pytest.mark.parametrize("name", ["Transcriber", "ChunkTranscriber"])
def test_whisper_classes_load_once_per_container(name):
    """The shared shell's @modal.enter hooks are found on each class (Modal walks the MRO)."""
    from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags

    user_cls = getattr(modal_app, name)._get_user_cls()
    hooks = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    after = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    assert set(hooks) == {"prepare"} and set(after) == {"load"}
