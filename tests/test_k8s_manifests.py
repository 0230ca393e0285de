"""Kubernetes: the Indexed Job manifest, validated against the API schema two ways (the `kubernetes`
client's generated models, and the official JSON schemas bundled in `kubernetes-validate`), and the
shard runner each pod executes, on real audio with the bundled model."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from functions import k8s
from functions.batch import ALL_FORMATS, discover, output_stem, shard

REPO = Path(__file__).resolve().parent.parent
IMAGE = "registry.example.com/whospoke-worker:0.1.0"
K8S_VERSIONS = ["1.30", "1.33"]  # backoffLimitPerIndex: beta (on by default) since 1.29, GA in 1.33


@pytest.fixture
def job() -> dict:
    return k8s.indexed_job(image=IMAGE, shards=6, parallelism=3)


def container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


# --- schema -------------------------------------------------------------------------------------------


def test_job_validates_against_the_client_models(job):
    typed = k8s.validate(job)
    assert isinstance(typed, client.V1Job)
    assert typed.spec.completion_mode == "Indexed"
    assert typed.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_job_validates_against_the_official_json_schema(job, version):
    kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_variants_validate_too(version):
    for manifest in (
        k8s.indexed_job(image=IMAGE, shards=1, gpus=0),
        k8s.indexed_job(
            image=IMAGE,
            shards=40,
            parallelism=8,
            namespace="speech",
            pyannote_model="pyannote/speaker-diarization-community-1",
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        ),
    ):
        k8s.validate(manifest)
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: container(m).update(bogus=1), "unknown field 'bogus'"),
        (lambda m: m["spec"].update(completions="6"), "expected int"),
        (lambda m: container(m)["env"].append({"value": "x"}), "name"),  # EnvVar.name is required
        (lambda m: container(m)["resources"]["limits"].update({"nvidia.com/gpu": 1}), "expected str"),
        (lambda m: m.update(kind="CronJob"), "unsupported"),
    ],
)
def test_the_validator_rejects_what_the_api_would(job, mutate, message):
    bad = copy.deepcopy(job)
    mutate(bad)
    with pytest.raises(k8s.ManifestError, match=message):
        k8s.validate(bad)


def test_the_json_schema_rejects_an_unknown_field_too(job):
    bad = copy.deepcopy(job)
    container(bad)["gpu"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


# --- what the Job does ---------------------------------------------------------------------------------


def test_one_shard_per_index(job):
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 6 and spec["parallelism"] == 3
    assert spec["backoffLimitPerIndex"] == 2 and spec["maxFailedIndexes"] == 6
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["SHARDS"]["value"] == "6"  # JOB_COMPLETION_INDEX comes from Kubernetes
    assert container(job)["command"] == ["python", "-m", "functions.k8s", "shard"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_same_image_gpu_token_and_volumes(job):
    c = container(job)
    assert c["image"] == IMAGE
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    token = {e["name"]: e for e in c["env"]}["HUGGINGFACE_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "whospoke-hf", "key": "HUGGINGFACE_TOKEN", "optional": True}
    assert "value" not in token  # never in the manifest itself
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"data": "/data", "models": "/models"}
    assert {e["name"]: e.get("value") for e in c["env"]}["HF_HOME"] == "/models/hf"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert claims == {"data": "whospoke-data", "models": "whospoke-models"}
    assert c["args"] == ["--input", "/data/in", "--output", "/data/out", "--formats", "all"]


def test_parallelism_never_exceeds_the_shards():
    assert k8s.indexed_job(image=IMAGE, shards=2, parallelism=10)["spec"]["parallelism"] == 2


def test_bad_names_and_counts_are_refused():
    with pytest.raises(ValueError):
        k8s.indexed_job(image=IMAGE, shards=2, name="Bad_Name")
    with pytest.raises(ValueError):
        k8s.indexed_job(image=IMAGE, shards=0)


def test_the_cli_prints_a_valid_manifest():
    out = subprocess.run(
        [sys.executable, "-m", "functions.k8s", "manifest", "--shards", "4", "--image", IMAGE, "--name", "calls"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    manifest = yaml.safe_load(out.stdout)
    assert manifest["metadata"]["name"] == "calls" and manifest["spec"]["completions"] == 4
    kubernetes_validate.validate(manifest, K8S_VERSIONS[-1], strict=True)


# --- the shard each pod runs ---------------------------------------------------------------------------


def test_shards_partition_the_inputs():
    items = [f"f{i:02d}.wav" for i in range(11)]
    parts = [shard(items, i, 4) for i in range(4)]
    assert sorted(sum(parts, [])) == items
    assert all(len(p) in (2, 3) for p in parts)
    with pytest.raises(ValueError):
        shard(items, 4, 4)


def test_inputs_are_found_the_same_way_on_every_pod(tmp_path):
    for name in ("b.mp3", "a.wav", "sub/c.flac", "notes.txt", "sub/d.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = discover(str(tmp_path))
    assert [Path(f).relative_to(tmp_path).as_posix() for f in found] == ["a.wav", "b.mp3", "sub/c.flac"]
    assert output_stem(found[2], str(tmp_path)) == "sub__c"
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\nhttps://example.com/x/talk.mp3\n\n" + found[0] + "\n")
    assert discover(str(listing)) == ["https://example.com/x/talk.mp3", found[0]]
    assert output_stem("https://example.com/x/talk.mp3").startswith("talk-")


@pytest.mark.slow
def test_a_pod_transcribes_its_shard_and_a_retry_skips_what_is_done(tmp_path, runner, monkeypatch):
    from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(TWO_SPEAKERS, inputs / "a_two.flac")
    shutil.copy(ONE_SPEAKER, inputs / "b_one.flac")
    (inputs / "c_broken.wav").write_bytes(b"RIFF not really audio")
    out = tmp_path / "out"

    counts0 = k8s.run_shard(str(inputs), str(out), index=0, count=2, formats=list(ALL_FORMATS), runner=runner)
    assert counts0 == {"shard": 2, "skipped": 0, "done": 1, "failed": 1}  # a_two + c_broken
    assert sorted(p.name for p in out.iterdir()) == sorted(f"a_two.{f}" for f in ALL_FORMATS)
    result = json.loads((out / "a_two.json").read_text())
    assert "country" in " ".join(s["text"] for s in result["segments"]).lower()
    assert "SPEAKER a_two 1 " in (out / "a_two.rttm").read_text()

    again = k8s.run_shard(str(inputs), str(out), index=0, count=2, formats=list(ALL_FORMATS), runner=runner)
    assert again == {"shard": 2, "skipped": 1, "done": 0, "failed": 1}  # the retry only redoes the failure

    counts1 = k8s.run_shard(str(inputs), str(out), index=1, count=2, formats=["txt"], runner=runner)
    assert counts1 == {"shard": 1, "skipped": 0, "done": 1, "failed": 0}
    assert (out / "b_one.txt").read_text().strip()


def test_the_shard_command_exits_non_zero_when_a_file_failed(tmp_path, monkeypatch):
    """So Kubernetes retries that index (backoffLimitPerIndex); done files are skipped then."""
    calls = {}

    def fake_run_shard(input_spec, output_dir, *, index, count, formats, runner=None):
        calls.update(index=index, count=count, formats=formats)
        return {"shard": 1, "skipped": 0, "done": 0, "failed": 1}

    monkeypatch.setattr(k8s, "run_shard", fake_run_shard)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    monkeypatch.setenv("SHARDS", "5")
    # the defaults are read when the parser is built, i.e. on this call
    assert k8s.main(["shard", "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 1
    assert calls == {"index": 3, "count": 5, "formats": list(ALL_FORMATS)}
