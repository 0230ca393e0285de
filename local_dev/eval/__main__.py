"""`make eval`: accuracy of the project's pipeline on the dev corpus (local_dev/eval/sets.py), in-process.

    python -m local_dev.eval [--half tune|check|all] [--sets conv,same,real,words,ident] [--limit N]
                             [--num-speakers-hint] [--only diar|words|ident] [--json OUT]

diar:  the configured diarizer (DIARIZER=embedded|pyannote, read by Settings) called directly on every
       file: DER at collar 0.5 and 0 (overlap scored; and at 0.5 with overlap skipped, as local_dev.bench
       and the tests score it), JER, speakers found/true, reference speech that no
       output turn covers (turns widened by 0.25 s each side), RTF.
words: the full pipeline (VAD, transcription, diarization, word timestamps) on the files with reference
       text, and, in the same run on the same files, plain faster-whisper (WhisperModel.transcribe, beam
       5, tiny.en, int8, CPU) as the baseline: WER with deletions counted apart, and reference speech
       that no output segment covers (widened by 0.25 s), for both. Plain's segments are coarse (they
       span pauses and, at times, speech it skipped), so its missed seconds flatter it: compare deletions.
Sets: conv (LibriSpeech voices, each on its own channel), same (the same voices through one shared
channel: local_dev/eval/same_channel.py), real (the seven real recordings: the verdict), words;
ident: named speakers (local_dev/eval/identification.py: enrolled voices named in conversations, the
VOICE_MATCH_THRESHOLD sweep on its tune half; about 4 min; --half and --limit do not apply to it).
Prints a line per file, then markdown tables (per half, kind and group, and the real recordings one by
one; local_dev/eval/report.py). Model loading
and a warm-up are outside the timings. This measures only: parameters are chosen on the tune half.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from local_dev.eval import report
from local_dev.eval import scoring as sc
from local_dev.eval.sets import SEED, Item, load_items
from shared.core.config import Settings
from shared.core.domain import SpeakerHints, TranscribeOptions
from shared.media.decode import decode
from shared.pipeline.diarization import build_diarizer
from shared.pipeline.flow import transcribe
from shared.pipeline.models import StageWorker
from shared.pipeline.runner import InProcessRunner
from shared.pipeline.transcriber import resolve_whisper_model

SR = 16_000
MISS_PAD_S = 0.25  # output spans widened this much each side before "missed speech" is measured


def select(items: list[Item], half: str, sets: set[str], limit: int | None) -> list[Item]:
    chosen = [i for i in items if i.kind in sets and (i.half == "dev" or half == "all" or i.half == half)]
    if limit:
        per_group: dict[str, int] = {}
        kept = []
        for item in chosen:
            per_group[item.group] = per_group.get(item.group, 0) + 1
            if per_group[item.group] <= limit:
                kept.append(item)
        chosen = kept
    return chosen


def ref_spans(item: Item) -> list[tuple[float, float]]:
    ann = sc.rttm_annotation(item.rttm)
    return [(s.start, s.end) for s in ann.get_timeline()]


def hints_for(item: Item, use: bool):
    return SpeakerHints(num_speakers=item.num_speakers) if use else SpeakerHints()


def score_diarization(item: Item, turns: list, seconds: float) -> dict:
    ref, hyp = sc.rttm_annotation(item.rttm), sc.turns_annotation(turns)
    return {
        "found": len(hyp.labels()),
        "der05": sc.diarization_counts(ref, hyp, collar=0.5),
        "der0": sc.diarization_counts(ref, hyp, collar=0.0),
        "der05_noovl": sc.diarization_counts(ref, hyp, collar=0.5, skip_overlap=True),
        "jer": sc.jer(ref, hyp),
        "speech_s": ref.get_timeline().support().duration(),
        "missed_s": sc.uncovered_seconds(ref_spans(item), [(t.start, t.end) for t in turns], pad=MISS_PAD_S),
        "rtf": seconds / item.duration,
        "turns": [[round(t.start, 3), round(t.end, 3), t.speaker] for t in turns],
    }


def run_diarization(items, settings, use_hints: bool, records: dict, out) -> None:
    diarizer = build_diarizer(settings)
    print(f"# diarization: {diarizer.name}, hints {'on' if use_hints else 'off'}, {len(items)} files", file=out)
    if items:
        diarizer.diarize(decode(items[0].audio).samples[: 10 * SR], hints_for(items[0], False))  # warm-up
    for item in items:
        samples = decode(item.audio).samples
        start = time.perf_counter()
        turns = diarizer.diarize(samples, hints_for(item, use_hints))
        d = score_diarization(item, turns, time.perf_counter() - start)
        records[item.name]["diar"] = d
        print(f"{item.name:24} {item.group:12} {item.half:5} {item.duration:6.1f}s  speakers {d['found']}/"
              f"{item.num_speakers}  DER {report.der(d['der05']):6.1%} / {report.der(d['der0']):6.1%}"
              f" (no ovl {report.der(d['der05_noovl']):6.1%})"
              f"  JER {d['jer']:6.1%}  missed {d['missed_s']:5.2f}s  RTF {d['rtf']:.3f}", file=out, flush=True)


def run_words(items, settings, use_hints: bool, records: dict, out) -> None:
    from faster_whisper import WhisperModel  # ctranslate2 loads only when the words part runs

    items = [i for i in items if i.text]
    runner = InProcessRunner(StageWorker(settings).load())
    plain = WhisperModel(resolve_whisper_model("tiny.en"), device="cpu", compute_type="int8",
                         cpu_threads=os.cpu_count() or 1)
    print(f"# words: whospoke pipeline (WHISPER_MODEL={settings.whisper_model}, diarizer "
          f"{settings.resolved_diarizer}) vs plain faster-whisper tiny.en beam 5, {len(items)} files", file=out)

    def ours(samples, item):
        options = TranscribeOptions(diarize=True, word_timestamps=True, language="en",
                                    speakers=hints_for(item, use_hints))
        t = transcribe(samples, options, runner, batch_size=settings.batch_size)
        return " ".join(s.text for s in t.segments), [(s.start, s.end) for s in t.segments]

    def baseline(samples, item):
        segments, _ = plain.transcribe(samples, beam_size=5, language="en")
        segments = list(segments)
        return " ".join(s.text for s in segments), [(s.start, s.end) for s in segments]

    if items:
        warm = decode(items[0].audio).samples[: 10 * SR]
        ours(warm, items[0]), baseline(warm, items[0])
    try:
        for item in items:
            samples = decode(item.audio).samples
            result = {}
            for label, go in (("ours", ours), ("plain", baseline)):
                start = time.perf_counter()
                text, spans = go(samples, item)
                seconds = time.perf_counter() - start
                result[label] = dict(sc.word_errors(item.text, text), text=text, rtf=seconds / item.duration,
                                     missed_s=sc.uncovered_seconds(ref_spans(item), spans, pad=MISS_PAD_S))
            records[item.name]["words"] = result
            o, p = result["ours"], result["plain"]
            print(f"{item.name:24} {item.group:12} {o['ref_words']:4d} words  WER {report.wer(o):6.1%} "
                  f"(del {o['deletions']:3d})  plain {report.wer(p):6.1%} (del {p['deletions']:3d})  "
                  f"missed {o['missed_s']:5.2f}s / plain {p['missed_s']:5.2f}s  RTF {o['rtf']:.3f} / "
                  f"{p['rtf']:.3f}", file=out, flush=True)
    finally:
        runner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_dev.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--half", choices=["tune", "check", "all"], default="all",
                        help="which half of the conversations (the dev recordings always run)")
    parser.add_argument("--sets", default="conv,same,real,words,ident",
                        help="comma-separated: conv, same, real, words, ident")
    parser.add_argument("--limit", type=int, default=None, help="at most N files of each group")
    parser.add_argument("--num-speakers-hint", action="store_true", help="give the true speaker count")
    parser.add_argument("--only", choices=["diar", "words", "ident"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="save every measurement here")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    settings = Settings()
    wanted = set(args.sets.split(","))
    items = select(load_items(seed=args.seed), args.half, wanted, args.limit) if wanted - {"ident"} else []
    records = {i.name: {"name": i.name, "group": i.group, "half": i.half, "duration": i.duration,
                        "speakers": i.num_speakers} for i in items}
    started = time.perf_counter()
    if args.only in (None, "diar"):
        run_diarization(items, settings, args.num_speakers_hint, records, sys.stdout)
    if args.only in (None, "words"):
        run_words(items, settings, args.num_speakers_hint, records, sys.stdout)
    rows = list(records.values())
    command = "python -m local_dev.eval " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n## Accuracy: {command.strip()} (diarizer {settings.resolved_diarizer}, "
          f"hints {'on' if args.num_speakers_hint else 'off'}, {time.perf_counter() - started:.0f} s)\n")
    print(report.summary(rows, args.num_speakers_hint))
    identified = None
    if "ident" in wanted and args.only in (None, "ident"):
        from local_dev.eval import identification  # named speakers: its own set, tables and threshold sweep

        identified = identification.run(settings, seed=args.seed)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "diarizer": settings.resolved_diarizer,
                                         "hints": args.num_speakers_hint, "seed": args.seed, "files": rows,
                                         "identification": identified},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
