"""The named-speaker set `make eval` scores identification on (local_dev/eval/identification.py).

- Synthetic (``../shared/data/librispeech_voices``): speakers split into a tune and a check half (disjoint,
  seeded; the ten speakers with ten recordings split five and five). Per half, ENROLLED speakers are
  enrolled from ONE utterance with 5-15 s of speech: a whole recording for a speaker with several (the
  others are its test material), else the first 6-15 s of speech of its only recording (its remaining
  speech, at least 5 s, is the test material). The other speakers of the half are never enrolled
  (unknowns). Conversations of 2-5 speakers (corpus.build_conversation: exact references) mix enrolled and
  unknown speakers, some with no enrolled speaker and some with no unknown one; every enrolled speaker
  talks in two or more. Each conversation twice: ``ident-clean`` (each voice on its own recording) and
  ``ident-same`` (the voices equalised, levelled within +-2 dB, through one shared room, noise bed and
  microphone, a quarter also a phone codec: same_channel.py), there enrolled from the same utterance
  equalised but without the room and microphone (key ``speaker@eq``): the voice is the one heard in the
  conversation, the channel differs, as a voice enrolled at a desk and heard in a meeting room.
- Real (``ident-real``, half "dev"): the seven real recordings cut in two at the middle; a speaker with
  REAL_MIN_S or more of speech of its own (nobody else talking) in the first part is enrolled from those
  turns (up to 15 s), the second part is the test. The four AMI EN2001a cuts are one meeting: its voices
  are enrolled from the first part of the longest cut (st00002) and tested on its second part and on the
  three other cuts whole (the same person in several conversations).
Nothing is cached: building takes seconds once the voices are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from local_dev.eval import corpus, sets
from local_dev.eval import same_channel as same
from shared.media.decode import decode

SALT = 7373  # the identification set's own seed stream
ENROLLED_PER_HALF = 16
CONVERSATIONS_PER_HALF = 20
SPEAKER_COUNTS = (2, 3, 4, 5)
ENROLLED_PATTERN = (1, 2, 0, 99, 1, 3)  # enrolled voices per conversation, cycled (99: all of them)
ENROL_S = (6.0, 15.0)  # speech of an enrolment cut from a speaker's only recording
MIN_TEST_S = 5.0
REAL_MIN_S = 4.0
REAL_MAX_S = 15.0


@dataclass
class Enrolment:
    speaker: str
    audio: np.ndarray
    spans: list[tuple[float, float]]


@dataclass
class Case:
    name: str
    group: str  # ident-clean, ident-same, ident-real
    half: str  # tune, check, dev
    audio: np.ndarray
    turns: list[tuple[float, float, str]]  # reference
    known: list[str]  # the enrolled speakers offered to identify(): keys of the enrolments (+ enrol_suffix)
    meta: dict = field(default_factory=dict)
    enrol_suffix: str = ""  # "@eq": the voices' equalised enrolments (ident-same)

    @property
    def duration(self) -> float:
        return len(self.audio) / corpus.SR


def speech_of(regions) -> float:
    return float(sum(b - a for a, b in regions))


def split_speakers(voices: dict[str, list[corpus.Source]], seed: int) -> dict[str, list[str]]:
    """{half: speakers}: several-recording speakers alternately, then the rest alternately, both shuffled."""
    rng = np.random.default_rng([seed, SALT])
    multi = [str(s) for s in rng.permutation(sorted(s for s, v in voices.items() if len(v) > 1))]
    single = [str(s) for s in rng.permutation(sorted(s for s, v in voices.items() if len(v) == 1))]
    return {"tune": multi[0::2] + single[0::2], "check": multi[1::2] + single[1::2]}


def enrolment_split(sources: list[corpus.Source]) -> tuple[Enrolment, list[corpus.Source]] | None:
    """(the enrolment utterance, the test material), or None when the speaker has too little speech."""
    speaker = sources[0].speaker
    if len(sources) > 1:  # one whole recording, 5-15 s of speech, nearest 10 s
        fits = [i for i, s in enumerate(sources) if 5.0 <= speech_of(s.regions) <= 15.0]
        if not fits:
            return None
        i = min(fits, key=lambda k: abs(speech_of(sources[k].regions) - 10.0))
        return Enrolment(speaker, sources[i].audio, list(sources[i].regions)), sources[:i] + sources[i + 1 :]
    src = sources[0]
    taken, total = [], 0.0
    for a, b in src.regions:
        if total >= ENROL_S[0] or total + (b - a) > ENROL_S[1]:
            break
        taken.append((a, b))
        total += b - a
    rest = src.regions[len(taken) :]
    if total < ENROL_S[0] or speech_of(rest) < MIN_TEST_S:
        return None
    return Enrolment(speaker, src.audio, taken), [corpus.Source(speaker, src.audio, list(rest))]


def synthetic(voices: dict[str, list[corpus.Source]], seed: int = sets.SEED, log=print):
    """({speaker: Enrolment}, [Case]) for both halves, clean and same-channel."""
    halves = split_speakers(voices, seed)
    target = same.mean_ltas([s for v in voices.values() for s in v])
    enrolments: dict[str, Enrolment] = {}
    cases: list[Case] = []
    for h, (half, speakers) in enumerate(halves.items()):
        rng = np.random.default_rng([seed, SALT, h])
        test: dict[str, list[corpus.Source]] = {}
        for s in speakers:  # several-recording speakers first: they come first in `speakers`
            split = enrolment_split(voices[s]) if len(test) < ENROLLED_PER_HALF else None
            if split is not None:
                enrolments[s], test[s] = split
                src = next(v for v in voices[s] if v.audio is split[0].audio)
                eq_audio = same.equalised(src, target)[0].audio
                enrolments[s + "@eq"] = Enrolment(s, eq_audio, split[0].spans)
        enrolled = list(test)
        unknown = [s for s in speakers if s not in test]
        log(f"  ident {half}: {len(enrolled)} enrolled, {len(unknown)} unknown speakers")
        order: list[str] = []
        for i in range(CONVERSATIONS_PER_HALF):
            n = SPEAKER_COUNTS[i % len(SPEAKER_COUNTS)]
            k = min(ENROLLED_PATTERN[i % len(ENROLLED_PATTERN)], n)
            chosen: list[str] = []
            while len(chosen) < k:  # enrolled voices round-robin, reshuffled each round
                if not order:
                    order = [str(s) for s in rng.permutation(enrolled)]
                s = order.pop(0)
                if s in chosen:
                    order.append(s)
                    continue
                chosen.append(s)
            chosen += [str(s) for s in rng.choice(unknown, n - k, replace=False)]
            material = {s: test[s] if s in test else voices[s] for s in chosen}
            duration = float(rng.uniform(40.0, 80.0))
            base = f"ident-{half}{i:02d}-{n}spk{k if k < 99 else n}k"
            conv = _conversation(material, n, duration, np.random.default_rng([seed, SALT, h, i]))
            known = sorted(enrolled)
            cases.append(Case(base, "ident-clean", half, conv.audio, _ref(conv), known, {"speakers": chosen}))
            eq = {s: [_with_regions(same.equalised(src, target)[0], src.regions) for src in srcs]
                  for s, srcs in material.items()}
            params = corpus.Params(level_db=same.LEVEL_DB, turn_jitter_db=same.TURN_JITTER_DB, noise_floor_dbfs=-90.0)
            crng = np.random.default_rng([seed, SALT, h, i, 1])
            conv2 = _conversation(eq, n, duration, crng, params)
            audio, info = same.shared_channel(conv2.audio, crng, [(t.start, t.end) for t in conv2.turns],
                                              codec=i % 4 == 3)
            cases.append(Case(base + "-same", "ident-same", half, audio, _ref(conv2), known,
                              {"speakers": chosen, "channel": info}, enrol_suffix="@eq"))
    return enrolments, cases


def _with_regions(src: corpus.Source, regions) -> corpus.Source:
    return corpus.Source(src.speaker, src.audio, list(regions))


def _conversation(material, n, duration, rng, params=None) -> corpus.Conversation:
    while True:
        conv = corpus.build_conversation(material, n, duration, rng, params)
        if conv.duration <= 120.0:
            return conv


def _ref(conv: corpus.Conversation) -> list[tuple[float, float, str]]:
    return [(t.start, t.end, t.speaker) for t in conv.turns]


# ------------------------------------------------------------------------------------------ real recordings


def rttm_turns(rttm: str) -> list[tuple[float, float, str]]:
    out = []
    for line in rttm.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER" and float(f[4]) > 0:
            out.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    return sorted(out)


def own_spans(turns, speaker: str, lo: float, hi: float) -> list[tuple[float, float]]:
    """The stretches in [lo, hi) where `speaker` talks and nobody else does."""
    others = sorted((a, b) for a, b, s in turns if s != speaker)
    out = []
    for a, b, s in sorted(turns):
        if s != speaker:
            continue
        pieces = [(max(a, lo), min(b, hi))]
        for oa, ob in others:
            pieces = [p for x, y in pieces for p in ((x, min(y, oa)), (max(x, ob), y)) if p[1] - p[0] > 1e-3]
        out += pieces
    return out


def _cut(turns, lo: float, hi: float):
    return [(max(a, lo) - lo, min(b, hi) - lo, s) for a, b, s in turns if min(b, hi) - max(a, lo) > 1e-3]


def _enrol_real(audio, turns, mid: float, enrolments: dict[str, Enrolment]) -> list[str]:
    known = []
    for speaker in sorted({s for _, _, s in turns}):
        spans, total = [], 0.0
        for a, b in sorted(own_spans(turns, speaker, 0.0, mid), key=lambda p: p[0] - p[1]):  # longest first
            if total >= REAL_MAX_S:
                break
            spans.append((a, min(b, a + REAL_MAX_S - total)))
            total += spans[-1][1] - a
        if total >= REAL_MIN_S:
            enrolments[speaker] = Enrolment(speaker, audio, sorted(spans))
            known.append(speaker)
    return known


def real(log=print):
    """({speaker: Enrolment}, [Case]) from the seven real recordings (see the module's docstring)."""
    enrolments: dict[str, Enrolment] = {}
    cases: list[Case] = []
    items = sets.real_recordings()
    ami = sorted((i for i in items if i.name.startswith("ami_EN2001a")), key=lambda i: -i.duration)
    for item in items:
        if item in ami[1:]:
            continue
        audio, turns = decode(item.audio).samples, rttm_turns(item.rttm)
        mid = _middle(turns, item.duration)
        known = _enrol_real(audio, turns, mid, enrolments)
        i = int(mid * corpus.SR)
        cases.append(Case(f"{item.name}-part2", "ident-real", "dev", audio[i:], _cut(turns, mid, item.duration),
                          known, {"enrolled_from": f"{item.name} 0-{mid:.1f} s"}))
        if item is ami[0]:
            for other in ami[1:]:
                cases.append(Case(other.name, "ident-real", "dev", decode(other.audio).samples,
                                  rttm_turns(other.rttm), known, {"enrolled_from": f"{item.name} 0-{mid:.1f} s"}))
    log(f"  ident real: {len(enrolments)} voices enrolled, {len(cases)} test parts")
    return enrolments, cases


def _middle(turns, duration: float) -> float:
    """The middle of a recording, moved to the nearest point where nobody talks if one is within 3 s."""
    mid = duration / 2
    free = [t for t in np.arange(mid - 3.0, mid + 3.0, 0.05) if not any(a < t < b for a, b, _ in turns)]
    return float(min(free, key=lambda t: abs(t - mid))) if free else mid
