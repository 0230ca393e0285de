"""Build a pyannote.audio 4 speaker-diarization pipeline with RANDOM weights, offline.

The real pretrained pipelines (pyannote/speaker-diarization-community-1, ...) are gated on the Hugging Face
hub and cannot be downloaded here. This builds the same layout locally so that pyannote.audio's real
loading and pipeline code runs end to end:

    <folder>/config.yaml                  SpeakerDiarization, models referenced as $model/<subfolder>
    <folder>/segmentation/pytorch_model.bin  PyanNet, powerset (3 speakers per chunk, 2 per frame)
    <folder>/embedding/pytorch_model.bin     XVectorSincNet (default: ~7x cheaper on a CPU) or
                                             WeSpeakerResNet34 (community-1's architecture)
    <folder>/plda/xvec_transform.npz, plda.npz  a random but well-formed PLDA for VBx clustering

Checkpoints are written the way pyannote.audio writes its own converted ones
(pyannote/audio/models/embedding/wespeaker/convert.py): state_dict + `Model.on_save_checkpoint`.
The weights are random, so the turns mean nothing; only the classifier's bias is nudged away from the
powerset's "nobody speaks" class, so that the pipeline always has speech to embed and cluster.

Usage: python tests/pyannote_checkpoint.py OUT_DIR [xvector|resnet34]
       (then PYANNOTE_MODEL=OUT_DIR/config.yaml, or PYANNOTE_MODEL=OUT_DIR)
Needs pyannote.audio (the .venv-pyannote environment).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEGMENTATION_DURATION = 10.0  # seconds per segmentation window, as in the pretrained model
EMBEDDING_DIMENSION = 256  # WeSpeakerResNet34's; the XVectorSincNet built here is given the same
LDA_DIMENSION = 128  # pyannote.audio.core.plda.PLDA default
EMBEDDINGS = ("xvector", "resnet34")

CONFIG_TEMPLATE = """\
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    segmentation: $model/segmentation
    segmentation_step: {segmentation_step}
    segmentation_batch_size: 8
    embedding: $model/embedding
    embedding_batch_size: 8
    embedding_exclude_overlap: true
    plda: $model/plda
    clustering: VBxClustering

params:
  segmentation:
    min_duration_off: 0.0
  clustering:
    threshold: 0.6
    Fa: 0.07
    Fb: 0.8
"""


def _save(model, path: Path) -> None:
    import lightning
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # adds pyannote.audio's versions, architecture, specifications
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def build_segmentation(path: Path, seed: int = 0) -> None:
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    model = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True},
        linear={"hidden_size": 128, "num_layers": 2},
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=SEGMENTATION_DURATION,
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.setup()  # adds the task-dependent classifier, exactly as loading a checkpoint does
    with torch.no_grad():
        # powerset classes: {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}; make "nobody" unlikely
        model.classifier.bias.zero_()
        model.classifier.bias[0] = -4.0
    _save(model, path)


def build_embedding(path: Path, architecture: str = "xvector", seed: int = 1) -> None:
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34, XVectorSincNet

    if architecture not in EMBEDDINGS:
        raise ValueError(f"embedding architecture must be one of {EMBEDDINGS}")
    torch.manual_seed(seed)
    if architecture == "resnet34":
        model = WeSpeakerResNet34()
    else:
        model = XVectorSincNet(dimension=EMBEDDING_DIMENSION)
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0
    )
    _save(model, path)


def build_plda(folder: Path, seed: int = 2) -> None:
    """A random PLDA with the shapes vbx_setup expects (orthonormal LDA, identity-like within-class)."""
    rng = np.random.default_rng(seed)
    lda, _ = np.linalg.qr(rng.standard_normal((EMBEDDING_DIMENSION, LDA_DIMENSION)))
    transform, _ = np.linalg.qr(rng.standard_normal((LDA_DIMENSION, LDA_DIMENSION)))
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "xvec_transform.npz",
        mean1=np.zeros(EMBEDDING_DIMENSION),
        mean2=np.zeros(LDA_DIMENSION),
        lda=lda,
    )
    np.savez(
        folder / "plda.npz",
        mu=np.zeros(LDA_DIMENSION),
        tr=transform,
        psi=np.linspace(5.0, 0.1, LDA_DIMENSION),
    )


def build_random_pipeline(
    folder: Path | str, *, embedding: str = "xvector", segmentation_step: float = 0.1
) -> Path:
    """Write a complete random-weight pipeline into `folder`; returns the path of its config.yaml.

    segmentation_step is the window step as a fraction of the 10 s window (pretrained pipelines: 0.1);
    tests use a larger one to run fewer windows on a small CPU.
    """
    folder = Path(folder)
    build_segmentation(folder / "segmentation" / "pytorch_model.bin")
    build_embedding(folder / "embedding" / "pytorch_model.bin", embedding)
    build_plda(folder / "plda")
    config = folder / "config.yaml"
    config.write_text(CONFIG_TEMPLATE.format(segmentation_step=segmentation_step))
    return config


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] and sys.argv[2] not in EMBEDDINGS:
        sys.exit(__doc__)
    print(build_random_pipeline(sys.argv[1], embedding=(sys.argv[2:] or ["xvector"])[0]))
