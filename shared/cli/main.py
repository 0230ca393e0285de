"""Command line: `whospoke transcribe FILE [-f srt] [--no-diarize] [--num-speakers 2] [-o out.srt]
[--voice Alice=alice.wav ...]`, and `whospoke stream FILE [--speed 4] [--resume-test]` against a running
server (shared/cli/stream.py)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from shared.cli import stream as cli_stream
from shared.core.config import get_settings
from shared.core.domain import OutputFormat, SpeakerHints, Task, TranscribeOptions
from shared.core.errors import ServiceError
from shared.media.clip_store import ClipStore
from shared.media.decode import AudioDecodeError, decode_to_pcm
from shared.media.pcm import PcmRef
from shared.pipeline.flow import PipelineRun
from shared.pipeline.models import StageWorker
from shared.pipeline.runner import InProcessRunner
from shared.service.formats import render
from shared.service.transcription import TranscriptionService, checked_options
from shared.service.voices import VoiceService
from shared.voices.model import checked_name

PROGRESS_AFTER_S = 60.0  # show a progress bar for files longer than this (or with --progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whospoke", description="Who said what, when: transcribe and diarize audio.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe one audio file")
    t.add_argument("file", type=Path)
    t.add_argument("-f", "--format", choices=[f.value for f in OutputFormat], default="txt")
    t.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    t.add_argument("--no-diarize", dest="diarize", action="store_false", help="skip speaker diarization")
    t.add_argument("--num-speakers", type=int)
    t.add_argument("--min-speakers", type=int)
    t.add_argument("--max-speakers", type=int)
    t.add_argument("--language", help="ISO 639-1 code; detected when omitted")
    t.add_argument("--task", choices=[x.value for x in Task], default="transcribe")
    t.add_argument("--word-timestamps", action="store_true")
    t.add_argument("--voice", action="append", default=[], metavar="NAME=FILE", type=voice_argument,
                   help="name the speaker who sounds like FILE (3+ s of that person alone) NAME; repeatable")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=f"progress bar (default: on for files over {PROGRESS_AFTER_S:g} s)")
    cli_stream.add_parser(sub)
    return parser


def voice_argument(value: str) -> tuple[str, Path]:
    name, sep, file = value.partition("=")
    if not sep or not file:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, e.g. Alice=alice.wav, not {value!r}")
    try:
        return checked_name(name), Path(file)
    except ServiceError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stream":
        return cli_stream.run(args)
    if args.voice and not args.diarize:
        print("whospoke: --voice names diarized speakers: drop --no-diarize", file=sys.stderr)
        return 2
    if len({name.casefold() for name, _ in args.voice}) != len(args.voice):
        print("whospoke: every --voice needs a different name", file=sys.stderr)
        return 2
    try:
        options = TranscribeOptions(
            diarize=args.diarize,
            speakers=SpeakerHints(num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                                  max_speakers=args.max_speakers),
            language=args.language,
            task=Task(args.task),
            word_timestamps=args.word_timestamps,
        )
    except ValidationError as exc:
        print(f"whospoke: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    return transcribe_file(args.file, options, OutputFormat(args.format), args.output, args.progress, args.voice)


def transcribe_file(path: Path, options: TranscribeOptions, fmt: OutputFormat, output: Path | None,
                    progress: bool | None, voices: list[tuple[str, Path]] = ()) -> int:
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="whospoke-") as tmp:
        try:
            options = checked_options(options, settings.whisper_model)  # the options' one check: the edge
            decode_to_pcm(path, Path(tmp) / "audio.pcm")  # streamed: a long file is never in memory whole
        except (OSError, AudioDecodeError, ServiceError) as exc:
            print(f"whospoke: {path}: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 1
        audio = PcmRef.of(Path(tmp) / "audio.pcm")
        return _transcribe(audio, path.name, options, settings, fmt, output, progress, voices, Path(tmp))


def _references(runner, settings, voices: list[tuple[str, Path]], scratch: Path):
    """The --voice references' voiceprints, made as the API makes OpenAI's per-request references (the
    files are copied first: what VoiceService reads, it deletes)."""
    clips = ClipStore(scratch / "references")
    staged = []
    for _, file in voices:
        staged.append(clips.incoming_file())
        shutil.copyfile(file, staged[-1])
    service = VoiceService(settings, TranscriptionService(settings, runner, clips), store=None)  # stores nothing
    return service.references([name for name, _ in voices], staged)


def _transcribe(audio, name, options, settings, fmt, output, progress, voices=(), scratch=None) -> int:
    duration = audio.duration
    show = progress if progress is not None else duration > PROGRESS_AFTER_S
    with InProcessRunner(StageWorker(settings)) as runner:
        known = []
        for voice_name, file in voices:  # each reference in turn, so an error can name it
            try:
                known += _references(runner, settings, [(voice_name, file)], scratch)
            except (OSError, ServiceError) as exc:
                print(f"whospoke: --voice {voice_name}={file}: {getattr(exc, 'message', exc)}", file=sys.stderr)
                return 1
        bar = tqdm(total=round(duration, 1), unit="s", unit_scale=True, desc=name, disable=not show, file=sys.stderr)

        def on_progress(done: float, total: float) -> None:
            bar.update(round(done, 1) - bar.n)

        transcript = PipelineRun(audio, options, runner, batch_size=settings.batch_size, on_progress=on_progress,
                                 known=known, match_threshold=settings.voice_match_threshold).transcript()
    bar.close()
    text = render(transcript, fmt, include_words=options.word_timestamps)
    if output:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


if __name__ == "__main__":  # `python -m shared.cli.main` (the tests' way in), as `whospoke`
    raise SystemExit(main())
