"""The files `make eval` scores: built once from ``../shared/data``, cached under bench-out/eval/.

- ``conv``: conversations of 1-8 real LibriSpeech voices (local_dev/eval/corpus.py), exact reference
  turns, split by conversation into a "tune" and a "check" half (balanced per speaker count), and a
  degraded copy (noise 5-15 dB SNR / reverberation / phone band) of a share of them, in the same half.
- ``same``: the same schedule of conversations (1-8 speakers, tune and check halves) built from the same
  voices made to sound like one room and one channel (local_dev/eval/same_channel.py: LTAS equalised,
  levels within +-2 dB, same-gender pairs as common as mixed ones, one shared room, noise bed, microphone
  and, for a quarter, codec): groups same-clean and same-phone, its own seed stream and cache; its check
  half uses only the conv check half's voices and its tune half only the others.
- ``real``: the seven real multi-speaker dev recordings (pyaudioanalysis_diar's two, ami_en2002a_30s, the
  four AMI EN2001a cuts of real_conversations) with their RTTM: the verdict for diarization.
- ``words``: the transcribed dev recordings (LibriVox reader: single_track and its 5 utterances; JFK),
  each also quiet (-20 dB), noisy (pink noise, 10 dB SNR) and reverberant (RT60 0.6 s); and
  "two_rooms", the reader then JFK recorded "in another room" (reverberant, 10 dB below the reader's
  speech level), then the reader again, reverberant (plain faster-whisper hears all three; at 8 dB below
  with a little more noise, tiny.en loses JFK itself: this case is on a knife's edge). Reference speech
  regions by energy on the clean original.
``real`` and ``words`` files belong to neither half (half "dev"). Deterministic from the seed; the cache
is keyed by the builder version, seed and size, so a change of any rebuilds it (conv + words and same
have their own keys).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from local_dev.eval import corpus
from local_dev.eval import same_channel as same
from shared.media.decode import decode
from shared.pipeline.vad import SileroVad

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("EVAL_DATA_DIR", ROOT.parent / "shared" / "data"))
OUT_DIR = ROOT / "bench-out" / "eval"
VERSION = 4  # bump when anything below or in corpus.py changes what the conv or words sets hold
SAME_VERSION = 3  # bump when local_dev/eval/same_channel.py or same_channel() below changes what is built
SAME_SALT = 5151  # the same-channel set's own seed stream: np.random.default_rng([seed, SAME_SALT, i])
SEED = 20261201
N_CONVERSATIONS = 64
# speakers per conversation: 64 conversations, more of 2-4 than of the rest (each count an even number,
# so the halves split every count evenly)
COUNT_SHARE = {1: 6, 2: 12, 3: 10, 4: 10, 5: 8, 6: 6, 7: 6, 8: 6}
COPY_CONDITIONS = ("noise", "reverb", "phone")
LIBRI = "librivox_sense_sensibility"
LIBRI_UTTERANCES = ["0870", "0880", "0890", "0920", "0930"]


@dataclass
class Item:
    name: str
    group: str  # conv-clean, conv-noise, conv-reverb, conv-phone, real, words-clean, words-quiet, ...
    half: str  # tune, check, dev
    audio: str  # path of a 16 kHz mono file
    rttm: str  # reference turns, RTTM text
    num_speakers: int
    duration: float
    text: str | None = None  # reference words, where known
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.group.split("-")[0]


def load_items(*, seed: int = SEED, n_conversations: int = N_CONVERSATIONS, log=print) -> list[Item]:
    """Every evaluation file, from the caches when they hold this build, else built now (a few minutes).
    Two caches: conv + words (key v{VERSION}) and the same-channel set (key same-v{SAME_VERSION}), so a
    change to one leaves the other's files as they are; the real recordings are read in place."""
    if not DATA_DIR.is_dir():
        raise FileNotFoundError(f"make eval needs the development data in {DATA_DIR} (set EVAL_DATA_DIR)")
    vad = _Lazy(_silero)
    tail = f"seed{seed}-n{n_conversations}"
    base = _cached(OUT_DIR / f"v{VERSION}-{tail}", log, lambda out: conversations(out, seed, n_conversations, vad, log)
                   + words_files(out, seed, vad))
    conv = [i for i in base if i.kind == "conv"]
    reserved = {s for i in conv if i.half == "check" for s in i.meta["levels_db"]}
    same = _cached(OUT_DIR / f"same-v{SAME_VERSION}-{tail}", log,
                   lambda out: same_channel(out, seed, n_conversations, vad, log, reserved))
    words = [i for i in base if i.kind == "words"]
    return conv + same + real_recordings() + words


def _cached(out: Path, log, build) -> list[Item]:
    manifest = out / "manifest.json"
    if manifest.exists():
        items = [Item(**d) for d in json.loads(manifest.read_text())]
        if all(Path(i.audio).exists() for i in items):
            return items
    log(f"building the evaluation set in {out} (once) ...")
    out.mkdir(parents=True, exist_ok=True)
    items = build(out)
    manifest.write_text(json.dumps([asdict(i) for i in items], indent=1))
    return items


class _Lazy:
    """The model VAD, loaded on the first call (only a build needs it)."""

    def __init__(self, make):
        self.make, self.fn = make, None

    def __call__(self, x):
        self.fn = self.fn or self.make()
        return self.fn(x)


# ------------------------------------------------------------------------------------------ conversations


def schedule(n: int = N_CONVERSATIONS) -> list[tuple[int, str]]:
    """(speakers, half) of conversation i: counts interleaved (1, 2, ..., 8, 1, 2, ...), and within each
    count alternately tune and check."""
    share = {k: round(v * n / N_CONVERSATIONS) for k, v in COUNT_SHARE.items()}
    seen = {k: 0 for k in share}
    out: list[tuple[int, str]] = []
    while len(out) < n and any(seen[k] < share[k] for k in share):
        for k, wanted in share.items():
            if seen[k] < wanted and len(out) < n:
                out.append((k, "tune" if seen[k] % 2 == 0 else "check"))
                seen[k] += 1
    return out


def conversations(out: Path, seed: int, n: int, vad, log) -> list[Item]:
    voices = load_voices(vad)
    log(f"  {sum(len(v) for v in voices.values())} recordings of {len(voices)} speakers")
    items, copies, rank = [], 0, {}
    for i, (count, half) in enumerate(schedule(n)):
        rng = np.random.default_rng([seed, i])
        while True:  # 30-120 s; the builder stops at a turn that would not fit, so retry the rare miss
            conv = corpus.build_conversation(voices, count, float(rng.uniform(42.0, 118.0)), rng)
            if 30.0 <= conv.duration <= 120.0:
                break
        assert len({t.speaker for t in conv.turns}) == count, "every voice of a conversation speaks"
        name = f"conv{i:02d}-{count}spk"
        rttm = corpus.to_rttm(conv.turns, name)
        meta = dict(conv.meta, overlap_s=round(corpus.overlap_seconds(conv.turns), 2),
                    speech_s=round(sum(t.end - t.start for t in conv.turns), 2))
        items.append(_save(out, name, "conv-clean", half, conv.audio, rttm, count, meta=meta))
        rank[count] = rank.get(count, -1) + 1
        if rank[count] % 4 in (0, 1):  # a degraded copy of about half, tune and check alike
            cond = COPY_CONDITIONS[copies % len(COPY_CONDITIONS)]
            copies += 1
            audio, info = corpus.degrade(conv.audio, cond, np.random.default_rng([seed, i, 1]),
                                         speech=[(t.start, t.end) for t in conv.turns])
            items.append(_save(out, f"{name}-{cond}", f"conv-{cond}", half, audio, rttm, count,
                               meta=dict(meta, **info)))
        log(f"  {name}: {conv.duration:.1f} s, {meta['backchannels']} backchannels, {meta['overlap_s']} s overlap")
    return items


_VOICES: dict = {}


def load_voices(vad) -> dict[str, list[corpus.Source]]:
    if "all" in _VOICES:
        return _VOICES["all"]
    voices: dict[str, list[corpus.Source]] = {}
    for path in sorted((DATA_DIR / "librispeech_voices").rglob("*.flac")):
        speaker = "ls" + re.match(r"\d+", path.name).group(0)
        x = decode(path).samples
        voices.setdefault(speaker, []).append(corpus.Source.of(speaker, x, within=vad(x)))
    _VOICES["all"] = voices
    return voices


def labelled_sex() -> dict[str, str]:
    """LibriSpeech's own gender labels (SPEAKERS.TXT): only to report how often the F0 estimate agrees."""
    out = {}
    for path in (DATA_DIR / "librispeech_voices").rglob("SPEAKERS.TXT"):
        for line in path.read_text().splitlines():
            f = [x.strip() for x in line.split("|")]
            if not line.startswith(";") and len(f) >= 2:
                out["ls" + f[0]] = f[1]
    return out


# ------------------------------------------------------------------------------------------ same channel


def same_channel(out: Path, seed: int, n: int, vad, log, check_voices: set[str]) -> list[Item]:
    """The conversations' schedule again (same counts, same halves), built with same_channel.py from
    equalised voices, picks gender-balanced within each half and speaker count, and one shared channel
    each; a quarter of them (ranks 4 and 5 of every 8 per count, so both halves) also through a
    telephone codec (group same-phone).
    Voices apart per half: the check half draws only from `check_voices` (the voices of the conv
    set's check half), the tune half only from the others, so no check-half voice of either set is
    heard in this set's tune half and what is learned on it can leave all check voices out."""
    voices = load_voices(vad)
    flat = [s for v in voices.values() for s in v]
    target = same.mean_ltas(flat)
    eq = {k: [same.equalised(s, target)[0] for s in v] for k, v in voices.items()}
    f0 = {k: same.median_f0(np.concatenate([same.speech_part(s.audio, s.regions) for s in v]))
          for k, v in voices.items()}
    genders = {k: same.gender_of(f) for k, f in f0.items()}
    label = labelled_sex()
    agree = [genders[k] == label[k] for k in genders if k in label]
    females = sum(g == "F" for g in genders.values())
    log(f"  LTAS spread across sources {same.ltas_spread_db(flat):.1f} dB -> "
        f"{same.ltas_spread_db(sum(eq.values(), [])):.1f} dB equalised; F0 gender {females} F / "
        f"{len(genders) - females} M, agrees with SPEAKERS.TXT on {sum(agree)}/{len(agree)}")
    pool = {"check": {k: g for k, g in genders.items() if k in check_voices},
            "tune": {k: g for k, g in genders.items() if k not in check_voices}}
    items, rank, lean = [], {}, {}  # lean: same-gender minus mixed pairs so far, per half and speaker count
    for i, (count, half) in enumerate(schedule(n)):
        rank[count] = rank.get(count, -1) + 1
        codec = rank[count] % 8 in (4, 5)
        rng = np.random.default_rng([seed, SAME_SALT, i])
        while True:
            conv = same.build(eq, pool[half], count, float(rng.uniform(42.0, 118.0)), rng, codec=codec,
                              lean=lean.get((half, count), 0))
            if 30.0 <= conv.duration <= 120.0:
                break
        pairs = conv.meta["same_gender_pairs"] - conv.meta["mixed_gender_pairs"]
        lean[half, count] = lean.get((half, count), 0) + pairs
        name = f"same{i:02d}-{count}spk" + ("-phone" if codec else "")
        meta = dict(conv.meta, overlap_s=round(corpus.overlap_seconds(conv.turns), 2),
                    speech_s=round(sum(t.end - t.start for t in conv.turns), 2),
                    f0_hz={s: round(f0[s], 1) for s in conv.speakers},
                    labelled_sex={s: label.get(s) for s in conv.speakers})
        items.append(_save(out, name, "same-phone" if codec else "same-clean", half, conv.audio,
                           corpus.to_rttm(conv.turns, name), count, meta=meta))
        log(f"  {name}: {conv.duration:.1f} s, {meta['genders']}, {meta['channel']}")
    return items


# ------------------------------------------------------------------------------------------ dev recordings


def real_recordings() -> list[Item]:
    """The seven real multi-speaker recordings, read in place (nothing cached): pyaudioanalysis_diar's
    two, ami_en2002a_30s, and the four AMI EN2001a cuts of real_conversations (one shared channel)."""
    files = [DATA_DIR / "pyaudioanalysis_diar" / f"{s}.wav" for s in ("diarizationExample", "diarizationExample2")]
    files.append(DATA_DIR / "ami_en2002a_30s" / "EN2002a_30s.wav")
    files += sorted((DATA_DIR / "real_conversations").glob("*.wav"))
    items = []
    for wav in files:
        rttm = wav.with_suffix(".rttm").read_text()
        speakers = {line.split()[7] for line in rttm.splitlines() if line.startswith("SPEAKER")}
        items.append(Item(wav.stem, "real", "dev", str(wav), rttm, len(speakers), soundfile.info(str(wav)).duration))
    return items


def words_files(out: Path, seed: int, vad) -> list[Item]:
    originals = [(f"libri_{u}", LIBRI, f"sense_and_sensibility_01_austen_64kb-{u}") for u in LIBRI_UTTERANCES]
    originals += [("libri_single_track", LIBRI, "single_track"), ("jfk", "jfk", "jfk_16k")]
    clips: dict[str, tuple[np.ndarray, str, str]] = {}
    items = []
    for k, (name, folder, stem) in enumerate(originals):
        wav = DATA_DIR / folder / f"{stem}.wav"
        text = (DATA_DIR / folder / ("ref.txt" if folder == "jfk" else f"{stem}.ref.txt")).read_text().strip()
        x = decode(wav).samples
        speaker = "jfk" if folder == "jfk" else "librivox_reader"
        clips[name] = (x, text, speaker)
        turns = [corpus.RefTurn(a, b, speaker) for a, b in corpus.speech_regions(x, within=vad(x))]
        rttm = corpus.to_rttm(turns, name)
        items.append(Item(name, "words-clean", "dev", str(wav), rttm, 1, len(x) / corpus.SR, text))
        speech = [(t.start, t.end) for t in turns]
        rng = np.random.default_rng([seed, 1000 + k])
        for cond, audio in (
            ("quiet", corpus.attenuate(x, -20.0)),
            ("noisy", corpus.limit_peak(corpus.add_noise(x, 10.0, rng, kind="pink", speech=speech))),
            ("reverb", corpus.reverberate(x, 0.6, rng)),
        ):
            items.append(_save(out, f"{name}-{cond}", f"words-{cond}", "dev", audio, rttm, 1, text=text))
    items.append(two_rooms(out, clips, seed, vad))
    return items


def two_rooms(out: Path, clips: dict, seed: int, vad) -> Item:
    """The reader (clean), JFK in another room (reverberant, 10 dB below the reader), the reader reverberant;
    faint pink noise (40 dB SNR) over all."""
    rng = np.random.default_rng([seed, 2000])
    reader, reader_text, _ = clips["libri_single_track"]
    jfk, jfk_text, _ = clips["jfk"]
    last, last_text, _ = clips["libri_0870"]
    def rms(x):
        return corpus.speech_rms(x, corpus.speech_regions(x))

    level = rms(reader) / rms(jfk)
    pieces = [
        (reader, reader_text, "librivox_reader", reader),
        (jfk, jfk_text, "jfk", corpus.attenuate(corpus.reverberate(jfk * level, 0.7, rng), -10.0)),
        (last, last_text, "librivox_reader", corpus.reverberate(last, 0.5, rng)),
    ]
    gap = np.zeros(int(0.8 * corpus.SR), np.float32)
    audio, turns, t = [], [], 0.0
    for clean, _, speaker, placed in pieces:
        turns += [corpus.RefTurn(t + a, t + b, speaker) for a, b in corpus.speech_regions(clean, within=vad(clean))]
        audio += [placed, gap]
        t += (len(placed) + len(gap)) / corpus.SR
    mix = np.concatenate(audio)
    mix = corpus.limit_peak(corpus.add_noise(mix, 40.0, rng, kind="pink"))
    text = " ".join(p[1] for p in pieces)
    return _save(out, "two_rooms", "words-mixed", "dev", mix, corpus.to_rttm(turns, "two_rooms"), 2, text=text)


# -------------------------------------------------------------------------------------------------- util


def _silero():
    """A generous model VAD (threshold 0.35, 0.15 s padding) for the energy detector to stay inside."""
    vad = SileroVad(threshold=0.35)

    def regions(x: np.ndarray) -> list[tuple[float, float]]:
        return [(r.start - 0.15, r.end + 0.15) for r in vad.speech_regions(x, min_silence_ms=250)]

    return regions


def _save(out: Path, name, group, half, audio, rttm, count, *, text=None, meta=None) -> Item:
    path = out / f"{name}.wav"
    soundfile.write(path, np.asarray(audio, np.float32), corpus.SR, subtype="FLOAT")
    (out / f"{name}.rttm").write_text(rttm)
    return Item(name, group, half, str(path), rttm, count, len(audio) / corpus.SR, text, meta or {})
