"""Speaker diarization behind one port (port.py), with two adapters.

- `embedded`: Silero VAD + resemblyzer speaker embeddings + clustering. Offline, no token; the default.
- `pyannote`: pyannote.audio's pipeline (PYANNOTE_MODEL from the hub with HUGGINGFACE_TOKEN, or a local
  config/checkpoint path). Needs pyannote.audio installed (the diarizer image, `make test-pyannote`).

DIARIZER=auto picks pyannote when PYANNOTE_MODEL is set, else embedded.
"""

from __future__ import annotations

from shared.core.config import Settings
from shared.pipeline.diarization.port import Diarizer


def build_diarizer(settings: Settings) -> Diarizer:
    # Each adapter's module loads with its model, never before: the web image imports this package (for
    # speaker labels) without scikit-learn or torch, and pyannote.audio needs its own torch.
    if settings.resolved_diarizer == "pyannote":
        from shared.pipeline.diarization.pyannote_diarizer import PyannoteDiarizer

        return PyannoteDiarizer.from_settings(settings)
    from shared.pipeline.diarization.embedded import EmbeddedDiarizer

    return EmbeddedDiarizer.from_settings(settings)
