"""pyannote.audio adapter of the Diarizer port.

PYANNOTE_MODEL names the pipeline: a hub id (e.g. `pyannote/speaker-diarization-community-1`, gated: it needs
HUGGINGFACE_TOKEN and the model's conditions accepted on the hub) or a local path to a pipeline
`config.yaml` or to the folder holding one (models referenced as `$model/<subfolder>` resolve beside it).

pyannote.audio is imported lazily, in the constructor: it lives in its own environment (torch 2.11; see
`make test-pyannote` and the diarizer image), and `import shared.pipeline.diarization` must work without it.

pyannote.audio 4.x returns a `DiarizeOutput` with two annotations: `speaker_diarization` (overlapping
speech keeps every speaker) and `exclusive_speaker_diarization` (at most one speaker at a time, which
pyannote provides for aligning with a transcript). Turns come from the exclusive one by default, since
words are attributed to one speaker each; `exclusive=False` gives the overlapping one. A pipeline built
with `legacy: true` (or a 3.x-style pipeline) returns a bare `Annotation`; both shapes are handled.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.pipeline.diarization.port import speaker_label
from shared.core.domain import SAMPLE_RATE, SpeakerHints, Turn
from shared.media.pcm import as_audio

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.media.pcm import AudioSource

log = logging.getLogger(__name__)

# pyannote.audio 4 sends usage telemetry (OpenTelemetry traces to pyannote's servers) unless told not to.
# A service must not phone home by default; an explicit PYANNOTE_METRICS_ENABLED=true still wins.
_TELEMETRY_ENV = "PYANNOTE_METRICS_ENABLED"

# Shorter than this, pyannote cannot run its models (and there is nobody to find anyway).
MIN_SAMPLES = SAMPLE_RATE // 10


def _looks_like_path(model: str) -> bool:
    """A hub id is `org/name`; anything path-like that does not exist is a mistake, not a hub id."""
    return (
        model.startswith(("/", "./", "../", "~"))
        or model.endswith((".yaml", ".yml"))
        or model.count("/") > 1
        or os.sep != "/" and os.sep in model
    )


def _hub_cache_dir(hf_home: Path | str | None) -> Path | None:
    """HF_HOME is the root of the Hugging Face cache; downloaded repos live in its `hub/` folder."""
    return Path(hf_home).expanduser() / "hub" if hf_home else None


class PyannoteDiarizer:
    """Speaker diarization with a pyannote.audio pipeline, loaded once; `diarize` is thread-safe."""

    name = "pyannote"

    def __init__(
        self,
        model: str,
        *,
        token: str | None = None,
        cache_dir: Path | str | None = None,
        device: str = "cpu",
        exclusive: bool = True,
    ) -> None:
        if not model:
            raise ValueError("PYANNOTE_MODEL is not set: give a hub id or a local pipeline config path")
        local = Path(model).expanduser()
        if local.exists():
            checkpoint = str(local)
        elif _looks_like_path(model):
            raise FileNotFoundError(f"PYANNOTE_MODEL={model!r}: no such pipeline config file or folder")
        else:
            checkpoint = model  # a hub id

        os.environ.setdefault(_TELEMETRY_ENV, "false")
        import torch
        from pyannote.audio import Pipeline

        try:
            pipeline = Pipeline.from_pretrained(checkpoint, token=token, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - re-raised with what the operator needs to know
            hint = (
                "" if local.exists() else
                " (a hub pipeline is gated: set HUGGINGFACE_TOKEN and accept its conditions on the hub,"
                " or point PYANNOTE_MODEL at a local config.yaml)"
            )
            raise RuntimeError(f"cannot load pyannote pipeline {model!r}: {exc}{hint}") from exc
        if pipeline is None:  # pyannote returns None when the hub has no such pipeline
            raise RuntimeError(f"cannot load pyannote pipeline {model!r}: not found")

        self.device = device
        if device == "cuda":
            pipeline.to(torch.device("cuda"))
        self.model = model
        self.exclusive = exclusive
        self._pipeline = pipeline
        self._lock = threading.Lock()
        log.info("pyannote pipeline %s loaded on %s", model, device)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "PyannoteDiarizer":
        if not settings.pyannote_model:
            raise ValueError("DIARIZER=pyannote needs PYANNOTE_MODEL (hub id or local pipeline config path)")
        return cls(
            settings.pyannote_model,
            token=settings.huggingface_token.get_secret_value() if settings.huggingface_token else None,
            cache_dir=_hub_cache_dir(settings.hf_home),
            device=settings.resolved_device,
        )

    def diarize(self, source: "AudioSource | np.ndarray", hints: SpeakerHints | None = None) -> list[Turn]:
        """16 kHz mono float32 in; speaker turns out, sorted by start, labelled SPEAKER_00, SPEAKER_01...

        pyannote's pipeline takes the whole waveform: this adapter reads it into memory (4 bytes a
        sample, 230 MB an hour), unlike the embedded diarizer, which reads region by region."""
        import torch

        audio = np.ascontiguousarray(as_audio(source).read())
        if audio.size < MIN_SAMPLES:
            return []
        if not audio.flags.writeable:  # torch.from_numpy wants a writable buffer (np.frombuffer is not)
            audio = audio.copy()
        duration = audio.size / SAMPLE_RATE
        file = {"waveform": torch.from_numpy(audio).unsqueeze(0), "sample_rate": SAMPLE_RATE, "uri": "clip"}
        with self._lock:
            output = self._pipeline(file, **_hint_kwargs(hints))
        return _to_turns(self._annotation(output), duration)

    def _annotation(self, output: Any) -> Any:
        names = ("exclusive_speaker_diarization", "speaker_diarization")
        for name in names if self.exclusive else names[::-1]:
            annotation = getattr(output, name, None)
            if annotation is not None:
                return annotation
        if hasattr(output, "itertracks"):  # legacy pipelines return the Annotation itself
            return output
        raise TypeError(f"unexpected pyannote pipeline output: {type(output).__name__}")


def _hint_kwargs(hints: SpeakerHints | None) -> dict[str, int]:
    if hints is None:
        return {}
    if hints.num_speakers is not None:  # pyannote ignores min/max when num_speakers is given
        return {"num_speakers": hints.num_speakers}
    return {
        key: value
        for key, value in (("min_speakers", hints.min_speakers), ("max_speakers", hints.max_speakers))
        if value is not None
    }


def _to_turns(annotation: Any, duration: float) -> list[Turn]:
    """pyannote Annotation -> turns within [0, duration], relabelled in order of first appearance."""
    raw: list[tuple[float, float, Any]] = []
    for segment, _track, label in annotation.itertracks(yield_label=True):
        start = round(min(max(float(segment.start), 0.0), duration), 3)
        end = round(min(max(float(segment.end), 0.0), duration), 3)
        if end > start:
            raw.append((start, end, label))
    raw.sort(key=lambda item: (item[0], item[1]))
    labels: dict[Any, str] = {}
    turns = []
    for start, end, label in raw:
        if label not in labels:
            labels[label] = speaker_label(len(labels))
        turns.append(Turn(start=start, end=end, speaker=labels[label]))
    return turns
