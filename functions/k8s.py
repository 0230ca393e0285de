"""Kubernetes: the worker image (images/Dockerfile.worker) as an Indexed Job that fans a batch out.

Each pod gets JOB_COMPLETION_INDEX from Kubernetes, takes shard INDEX of SHARDS of the sorted input
list (round robin), runs the shared pipeline in-process on its GPU, and writes every output format next
to the others on the output volume. Finished files are skipped, so a retried index only does what is
left. The Hugging Face token comes from a Secret; the weights cache (HF_HOME) is a volume.

    python -m functions.k8s manifest --shards 8 --image registry.example.com/whospoke-worker:0.1.0 > job.yaml
    kubectl create secret generic whospoke-hf --from-literal=HUGGINGFACE_TOKEN=hf_...   # once
    kubectl apply -f job.yaml
    python -m functions.k8s shard --input /data/in --output /data/out       # what each pod runs

`manifest` validates what it prints against the Kubernetes API schema (the `kubernetes` client's models),
which tests/test_k8s_manifests.py does too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from functions.batch import (
    discover,
    fetch,
    output_stem,
    outputs_exist,
    parse_formats,
    shard,
    transcribe_audio,
    write_outputs,
)
from shared.core.config import Settings
from shared.core.domain import TranscribeOptions
from shared.pipeline.models import StageWorker
from shared.pipeline.runner import InProcessRunner

log = logging.getLogger(__name__)

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DATA_MOUNT = "/data"
MODELS_MOUNT = "/models"


def indexed_job(
    *,
    image: str,
    shards: int,
    name: str = "whospoke-batch",
    namespace: str | None = None,
    parallelism: int | None = None,
    data_claim: str = "whospoke-data",
    models_claim: str = "whospoke-models",
    input_dir: str = f"{DATA_MOUNT}/in",
    output_dir: str = f"{DATA_MOUNT}/out",
    formats: str = "all",
    secret_name: str = "whospoke-hf",
    whisper_model: str = "large-v3",
    pyannote_model: str | None = None,
    gpus: int = 1,
    gpu_resource: str = "nvidia.com/gpu",
    cpu: str = "4",
    memory: str = "16Gi",
    backoff_limit_per_index: int = 2,
    ttl_seconds_after_finished: int = 86_400,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A batch/v1 Job (completionMode Indexed): `shards` pods, `parallelism` at a time, one shard each."""
    if not DNS_1123.match(name) or len(name) > 52:  # pods are named <job>-<index>-<suffix>, at most 63
        raise ValueError(f"job name {name!r} must be a DNS-1123 label of at most 52 characters")
    if shards < 1:
        raise ValueError("shards must be at least 1")
    parallelism = min(parallelism or shards, shards)
    env = [
        {"name": "SHARDS", "value": str(shards)},  # JOB_COMPLETION_INDEX is set by Kubernetes
        {"name": "WHISPER_MODEL", "value": whisper_model},
        {"name": "DEVICE", "value": "cuda" if gpus else "cpu"},
        {"name": "HF_HOME", "value": f"{MODELS_MOUNT}/hf"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {
            "name": "HUGGINGFACE_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "HUGGINGFACE_TOKEN", "optional": True}},
        },
    ]
    if pyannote_model:
        env.append({"name": "PYANNOTE_MODEL", "value": pyannote_model})
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}
    if gpus:
        resources["limits"][gpu_resource] = str(gpus)
        resources["requests"][gpu_resource] = str(gpus)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # required by backoffLimitPerIndex / podFailurePolicy
        "containers": [
            {
                "name": "worker",
                "image": image,
                "command": ["python", "-m", "functions.k8s", "shard"],
                "args": ["--input", input_dir, "--output", output_dir, "--formats", formats],
                "env": env,
                "resources": resources,
                "volumeMounts": [
                    {"name": "data", "mountPath": DATA_MOUNT},
                    {"name": "models", "mountPath": MODELS_MOUNT},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": data_claim}},
            {"name": "models", "persistentVolumeClaim": {"claimName": models_claim}},
        ],
    }
    if gpus:
        pod_spec["tolerations"] = [{"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "whospoke", "app.kubernetes.io/component": "batch"}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": parallelism,
            "backoffLimitPerIndex": backoff_limit_per_index,
            "maxFailedIndexes": shards,  # one bad shard does not stop the others
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            # a node drained or preempted under a pod is not the pod's fault: do not count it
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
            },
            "template": {"metadata": {"labels": dict(metadata["labels"])}, "spec": pod_spec},
        },
    }


# --- validation against the Kubernetes API schema ----------------------------------------------------


class ManifestError(ValueError):
    pass


def validate(manifest: dict[str, Any]) -> Any:
    """Check `manifest` against the `kubernetes` client's models (generated from the API's OpenAPI
    schema): every field must exist in the schema with the right type, every required field must be
    there. Returns the typed object (e.g. kubernetes.client.V1Job)."""
    from kubernetes import client  # optional: a dev dependency, not in the worker image that runs `shard`

    kinds = {("batch/v1", "Job"): "V1Job"}
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in kinds:
        raise ManifestError(f"unsupported apiVersion/kind {key}")
    model = kinds[key]
    _check(manifest, model, "$", client)
    api = client.ApiClient()
    try:
        return api._ApiClient__deserialize(manifest, model)  # required fields are enforced here
    except ValueError as exc:
        raise ManifestError(str(exc)) from exc


_PRIMITIVES = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,  # IntOrString and free-form fields
    "datetime": str,
    "date": str,
    "bytes": str,
}


def _check(value: Any, type_name: str, path: str, client) -> None:
    if value is None:
        return
    # container types are spelled list[X] / dict(str, X) or List[X] / Dict[str, X], by client version
    if type_name[:5].lower() == "list[":
        if not isinstance(value, list):
            raise ManifestError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, type_name[5:-1], f"{path}[{i}]", client)
        return
    if type_name[:5].lower() in ("dict(", "dict["):
        if not isinstance(value, dict):
            raise ManifestError(f"{path}: expected a mapping, got {type(value).__name__}")
        inner = type_name[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            if not isinstance(k, str):
                raise ManifestError(f"{path}: keys must be strings, got {k!r}")
            _check(v, inner, f"{path}.{k}", client)
        return
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        if type_name == "int" and isinstance(value, bool) or not isinstance(value, expected):
            raise ManifestError(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    cls = getattr(client, type_name, None) or getattr(client.models, type_name)
    if not isinstance(value, dict):
        raise ManifestError(f"{path}: expected a {type_name} mapping, got {type(value).__name__}")
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for json_key, item in value.items():
        if json_key not in by_json:
            raise ManifestError(f"{path}: unknown field {json_key!r} for {type_name}")
        _check(item, cls.openapi_types[by_json[json_key]], f"{path}.{json_key}", client)


def to_yaml(manifest: dict[str, Any]) -> str:
    try:
        import yaml  # optional, as the kubernetes client

        return yaml.safe_dump(manifest, sort_keys=False)
    except ImportError:  # kubectl reads JSON as well
        return json.dumps(manifest, indent=2) + "\n"


# --- what each pod runs --------------------------------------------------------------------------------


def run_shard(input_spec: str, output_dir: str, *, index: int, count: int, formats: list[str], runner=None) -> dict[str, int]:
    """Transcribe shard `index` of `count` of the inputs with the shared pipeline, in-process."""
    settings = Settings()
    root = input_spec if Path(input_spec).is_dir() else None
    mine = shard(discover(input_spec), index, count)
    out = Path(output_dir)
    todo = [e for e in mine if not outputs_exist(out, output_stem(e, root), formats)]
    counts = {"shard": len(mine), "skipped": len(mine) - len(todo), "done": 0, "failed": 0}
    log.info("shard %d/%d: %d inputs, %d already done", index, count, len(mine), counts["skipped"])
    if not todo:
        return counts
    own = runner is None
    if own:
        runner = InProcessRunner(StageWorker(settings).load())
    try:
        for entry in todo:
            stem = output_stem(entry, root)
            try:
                data = fetch(entry, max_bytes=settings.max_upload_bytes)
                write_outputs(out, stem, transcribe_audio(data, TranscribeOptions(), runner, settings, formats, file_id=stem))
                counts["done"] += 1
                log.info("done %s", entry)
            except Exception:  # noqa: BLE001 - one bad file must not stop the shard
                counts["failed"] += 1
                log.exception("failed %s", entry)
    finally:
        if own:
            runner.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.k8s", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("manifest", help="print an Indexed Job manifest (validated)")
    m.add_argument("--image", required=True)
    m.add_argument("--shards", type=int, required=True)
    m.add_argument("--parallelism", type=int)
    m.add_argument("--name", default="whospoke-batch")
    m.add_argument("--namespace")
    m.add_argument("--data-claim", default="whospoke-data")
    m.add_argument("--models-claim", default="whospoke-models")
    m.add_argument("--secret", default="whospoke-hf")
    m.add_argument("--whisper-model", default="large-v3")
    m.add_argument("--pyannote-model")
    m.add_argument("--gpus", type=int, default=1)
    m.add_argument("--formats", default="all")

    s = sub.add_parser("shard", help="transcribe this pod's shard (JOB_COMPLETION_INDEX of SHARDS)")
    s.add_argument("--input", required=True, help="folder, .txt list of paths/URLs, or comma-separated")
    s.add_argument("--output", required=True)
    s.add_argument("--formats", default="all")
    s.add_argument("--index", type=int, default=int(os.environ.get("JOB_COMPLETION_INDEX", "0")))
    s.add_argument("--count", type=int, default=int(os.environ.get("SHARDS", "1")))

    args = parser.parse_args(argv)
    if args.command == "manifest":
        manifest = indexed_job(
            image=args.image,
            shards=args.shards,
            parallelism=args.parallelism,
            name=args.name,
            namespace=args.namespace,
            data_claim=args.data_claim,
            models_claim=args.models_claim,
            secret_name=args.secret,
            whisper_model=args.whisper_model,
            pyannote_model=args.pyannote_model,
            gpus=args.gpus,
            formats=args.formats,
        )
        try:
            validate(manifest)
        except ImportError:
            print("(kubernetes client not installed: manifest not validated)", file=sys.stderr)
        sys.stdout.write(to_yaml(manifest))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts = run_shard(args.input, args.output, index=args.index, count=args.count, formats=parse_formats(args.formats))
    print(json.dumps(counts))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
