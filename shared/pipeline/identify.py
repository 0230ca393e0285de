"""Speakers named after enrolled voices.

After diarization, each speaker's voiceprint (Stages.voiceprints over its turns) is compared with the
known voices by cosine similarity. Pairs are taken best first, one voice to at most one speaker and one
speaker to at most one voice, and only from `threshold` up (VOICE_MATCH_THRESHOLD, chosen on the
identification set's tune half: local_dev/eval/identification.py). A matched speaker's turns carry the
voice's name; the others keep SPEAKER_xx.

Enrolled voices also inform the count: when a known voice is left without a speaker although it
sounds like one already named after another voice (from `threshold` up), diarization most likely
merged the two people, so it runs once more asking for one speaker more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.core.domain import SpeakerHints, Turn, VoicePrint


DEFAULT_MAX_SPEAKERS = 8  # the embedded diarizer's own ceiling without max_speakers


@dataclass(frozen=True)
class KnownVoice:
    """A voice a transcription may name: an enrolled one (voice_id) or a per-request reference (its
    name stands as its id)."""

    voice_id: str
    name: str
    vector: np.ndarray  # unit length


@dataclass(frozen=True)
class Identity:
    name: str
    voice_id: str
    confidence: float  # cosine similarity of the speaker's voiceprint to the voice


def match_speakers(
    prints: dict[str, VoicePrint], known: list[KnownVoice], threshold: float
) -> tuple[dict[str, Identity], list[tuple[str, KnownVoice, float]]]:
    """{speaker label: identity} for the speakers that match a voice, best pairs first; and the voices
    left over that sound like an already named speaker from `threshold` up (label, voice, score)."""
    labels = [label for label, p in prints.items() if p.speech_s > 0]
    if not labels or not known:
        return {}, []
    scores = np.stack([prints[l].vector for l in labels]) @ np.stack([k.vector for k in known]).T
    matched: dict[str, Identity] = {}
    used: set[int] = set()
    for flat in np.argsort(-scores, axis=None):
        i, j = divmod(int(flat), len(known))
        if scores[i, j] < threshold:
            break
        if labels[i] in matched or j in used:
            continue
        matched[labels[i]] = Identity(known[j].name, known[j].voice_id, round(float(scores[i, j]), 3))
        used.add(j)
    crowded = [
        (labels[i], known[j], float(scores[i, j]))
        for j in range(len(known))
        if j not in used
        for i in [int(np.argmax(scores[:, j]))]
        if scores[i, j] >= threshold
    ]
    return matched, crowded


def speaker_spans(turns: list[Turn]) -> dict[str, list[tuple[float, float]]]:
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for turn in turns:
        spans[turn.speaker].append((turn.start, turn.end))
    return dict(spans)


def identify(
    turns: list[Turn],
    known: list[KnownVoice],
    threshold: float,
    *,
    voiceprints: Callable[[list[list[tuple[float, float]]]], list[VoicePrint]],
    rediarize: Callable[[SpeakerHints], list[Turn]] | None = None,
    hints: SpeakerHints | None = None,
) -> tuple[list[Turn], dict[str, Identity]]:
    """The turns with matched speakers renamed, and {name: identity}. `voiceprints` embeds groups of
    spans (the Stages.voiceprints call); `rediarize` runs diarization again with other hints."""
    if not turns or not known:
        return turns, {}
    matched, crowded = _match(turns, known, threshold, voiceprints)
    hints = hints or SpeakerHints()
    count = len(speaker_spans(turns))
    ceiling = hints.max_speakers or DEFAULT_MAX_SPEAKERS
    if crowded and rediarize is not None and hints.num_speakers is None and count < ceiling:
        wider = hints.model_copy(update={"min_speakers": count + 1})
        retry = rediarize(wider)
        again, still_crowded = _match(retry, known, threshold, voiceprints)
        if len(again) > len(matched):  # the extra speaker is one of the known voices: keep that split
            turns, matched = retry, again
    names = {label: identity.name for label, identity in matched.items()}
    renamed = [t.model_copy(update={"speaker": names.get(t.speaker, t.speaker)}) for t in turns]
    return renamed, {identity.name: identity for identity in matched.values()}


def _match(turns, known, threshold, voiceprints):
    spans = speaker_spans(turns)
    prints = dict(zip(spans, voiceprints(list(spans.values()))))
    return match_speakers(prints, known, threshold)
