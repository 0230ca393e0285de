"""Modal image definitions, one per function family, built from the pins in images/pins.py.

Building an image needs Modal (it happens at `modal deploy`); defining one does not, so importing this
module works offline and the tests read the definitions back.
"""

from __future__ import annotations

import modal

from images import pins

# The NVIDIA image has no Python of its own that Modal can use; Modal adds a standalone build.
_BASE_ENV = {"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYANNOTE_METRICS_ENABLED": "false"}


def _with_source(image: modal.Image) -> modal.Image:
    # Source last: it is mounted at container start, so a code change does not rebuild any layer. Python
    # files, and the browser page's assets (shared/api/static), which the default would leave out.
    from modal.file_pattern_matcher import FilePatternMatcher

    keep = ~FilePatternMatcher("**/*.py", "**/static/*")
    return image.env(_BASE_ENV).add_local_python_source(*pins.SOURCE_PACKAGES, ignore=keep)


def transcriber_image() -> modal.Image:
    """faster-whisper / CTranslate2 on the CUDA 12 + cuDNN 9 runtime image (libcublas.so.12 is there)."""
    return _with_source(
        modal.Image.from_registry(pins.CUDA_BASE_IMAGE, add_python=pins.PYTHON).pip_install(*pins.family("transcriber"))
    )


def diarizer_image() -> modal.Image:
    """pyannote.audio with torch==2.11.0 (CUDA 12.8 wheels carry their own cuDNN 9) + the embedded diarizer.

    torch, torchaudio and pyannote.audio go in one pip command so nothing can pull a mismatched torch.
    """
    return _with_source(
        modal.Image.debian_slim(python_version=pins.PYTHON)
        .pip_install(pins.torch_requirement(), *pins.family("diarizer"), extra_index_url=pins.TORCH_CUDA_INDEX)
        .pip_install(*pins.NO_DEPS, extra_options="--no-deps")
    )


def light_image() -> modal.Image:
    """CPU only, no torch: the web endpoint, the VAD mapper (ONNX), the batch orchestrator."""
    return _with_source(modal.Image.debian_slim(python_version=pins.PYTHON).pip_install(*pins.family("light")))
