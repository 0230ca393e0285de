"""The pipeline's stages: one typed interface, `Stages`, and the names, models and roles behind it.

A stage is a unit of work the pipeline hands to a Runner (shared/pipeline/runner.py). `Stages` gives each
one its real signature; `StageWorker` (shared/pipeline/models.py) implements it next to the models, and
every Runner runs the same calls wherever those models live (threads here, local worker processes,
Modal containers). Audio goes by reference (shared/media/pcm.py: a stored PCM file's path and length) and
each stage reads the spans it needs; live sessions send an utterance's samples, at most 30 s, by value.

Adding a stage: a method on `Stages` with its `@serves(...)` line, a member of `Stage` named after it,
and its implementation on StageWorker. Everything else (which model loads, which worker role serves
it, which Modal class answers) is read from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the signatures only: importing the domain here would not change any arrow
    import numpy as np

    from shared.core.domain import Chunk, ChunkTranscript, SpeakerHints, TranscribeOptions, Turn, VoicePrint, Word

    from shared.media.pcm import AudioSource, ChunkAudio


class Role(str, Enum):
    """What a worker serves: every stage, or one side of a split layout (with two or more GPUs one
    diarizes and the others transcribe). `--role` of `python -m local_dev worker` takes these names."""

    ALL = "all"
    TRANSCRIBE = "transcribe"
    DIARIZE = "diarize"


class Model(str, Enum):
    """The models a StageWorker holds, each loaded once on first use (its property of the same name)."""

    VAD = "vad"
    TRANSCRIBER = "transcriber"
    DIARIZER = "diarizer"
    PARTIAL_TRANSCRIBER = "partial_transcriber"  # live partials' fast model (STREAM_PARTIAL_MODEL)
    FINAL_TRANSCRIBER = "final_transcriber"  # live finals' model (STREAM_FINAL_MODEL)
    VOICE_ENCODER = "voice_encoder"  # live speakers: the embedded diarizer's encoder


@dataclass(frozen=True)
class StageSpec:
    model: Model  # the model the stage runs on
    roles: tuple[Role, ...]  # the split roles that serve it (Role.ALL serves every stage)


def serves(model: Model, *roles: Role) -> Callable[[Callable], Callable]:
    """Marks a `Stages` method with the model it needs and the worker roles that serve it."""

    def mark(method: Callable) -> Callable:
        method.stage_spec = StageSpec(model, roles)  # type: ignore[attr-defined]
        return method

    return mark


class Stages(Protocol):
    """Every stage, with its signature. Call one through a Runner: `runner.submit(Stages.diarize, audio,
    hints)` is a Future of what `StageWorker.diarize(audio, hints)` returns."""

    @serves(Model.VAD, Role.TRANSCRIBE, Role.DIARIZE)
    def vad_split(self, audio: AudioSource) -> list[Chunk]:
        """The clip cut into chunks Whisper can take, with their speech regions."""
        ...

    @serves(Model.TRANSCRIBER, Role.TRANSCRIBE)
    def detect_language(self, chunk: ChunkAudio) -> str:
        """The language of a chunk's first 30 s."""
        ...

    @serves(Model.TRANSCRIBER, Role.TRANSCRIBE)
    def transcribe(self, batch: list[ChunkAudio], options: TranscribeOptions) -> list[ChunkTranscript]:
        """One batch of chunks, decoded together."""
        ...

    @serves(Model.DIARIZER, Role.DIARIZE)
    def diarize(self, audio: AudioSource, hints: SpeakerHints) -> list[Turn]:
        """Who speaks when, over the whole clip."""
        ...

    @serves(Model.PARTIAL_TRANSCRIBER, Role.TRANSCRIBE)
    def live_partial(self, audios: list[np.ndarray], options: TranscribeOptions) -> list[list[Word]]:
        """Open live utterances so far, one greedy pass of the fast model (words in seconds into each)."""
        ...

    @serves(Model.FINAL_TRANSCRIBER, Role.TRANSCRIBE)
    def live_final(self, batch: list[ChunkAudio], options: TranscribeOptions) -> list[ChunkTranscript]:
        """Closed live utterances, decoded as file chunks are."""
        ...

    @serves(Model.VOICE_ENCODER, Role.DIARIZE)
    def embed_voice(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """One speaker vector per audio, from the diarizer's encoder."""
        ...

    @serves(Model.VOICE_ENCODER, Role.DIARIZE)
    def embed_windows(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Per audio, the encoder's vector of each 1.6 s window at 0, 0.4 s, 0.8 s, ... (an array of
        rows): live sessions look for a speaker change inside an open utterance with them."""
        ...

    @serves(Model.VOICE_ENCODER, Role.DIARIZE)
    def voiceprints(
        self, audio: AudioSource, groups: list[list[tuple[float, float]]], count_voices: bool = False
    ) -> list[VoicePrint]:
        """One voice per group of clip spans (a speaker's turns, an enrolment sample): the encoder's
        windows over the speech Silero finds in them, averaged; `count_voices`: with the number of
        speakers diarization hears in each."""
        ...


class Stage(str, Enum):
    """A stage's name: its `Stages` method's. Workers and the wire protocol name stages with it."""

    VAD_SPLIT = "vad_split"
    DETECT_LANGUAGE = "detect_language"
    TRANSCRIBE = "transcribe"
    DIARIZE = "diarize"
    LIVE_PARTIAL = "live_partial"
    LIVE_FINAL = "live_final"
    EMBED_VOICE = "embed_voice"
    EMBED_WINDOWS = "embed_windows"
    VOICEPRINTS = "voiceprints"

    @property
    def spec(self) -> StageSpec:
        return SPECS[self]


def stage_of(method: Callable[..., Any] | Stage | str) -> Stage:
    """The Stage of a `Stages` method (or of a name)."""
    return Stage(getattr(method, "__name__", method))


# Read from the interface; a Stage without a marked `Stages` method fails here, at import.
SPECS: dict[Stage, StageSpec] = {stage: getattr(Stages, stage.value).stage_spec for stage in Stage}
SERVED_BY: dict[Stage, tuple[Role, ...]] = {stage: spec.roles for stage, spec in SPECS.items()}
ROLE_STAGES: dict[Role, tuple[Stage, ...]] = {
    Role.ALL: tuple(Stage),
    **{role: tuple(s for s in Stage if role in SERVED_BY[s]) for role in (Role.TRANSCRIBE, Role.DIARIZE)},
}


def role_of(stages: tuple[Stage, ...]) -> Role:
    """The role whose stages are exactly `stages`."""
    for role, served in ROLE_STAGES.items():
        if set(served) == set(stages):
            return role
    raise ValueError(f"no worker role serves exactly {sorted(s.value for s in stages)}")

