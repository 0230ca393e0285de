"""`whospoke stream FILE`: play a file to a running server's /ws/stream as a live source would, print
partial words in place (on a terminal the tentative ones after them, dimmer) and each final with its
speaker, and speaker corrections as they come (`--resume-test`: cut the connection half-way, resume, and
carry on)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import numpy as np

from shared.live.client import StreamClient, StreamError
from shared.media.decode import AudioDecodeError, decode_stream

GREY, DIM, RESET, CLEAR = "\033[90m", "\033[2;3m", "\033[0m", "\r\033[K"


def add_parser(sub) -> None:
    s = sub.add_parser("stream", help="stream a file to a running server's /ws/stream, paced like live audio")
    s.add_argument("file", type=Path)
    s.add_argument("--url", default=os.environ.get("WHOSPOKE_STREAM_URL", "ws://127.0.0.1:8000/ws/stream"))
    s.add_argument("--api-key", default=os.environ.get("WHOSPOKE_API_KEY"), help="default: $WHOSPOKE_API_KEY")
    s.add_argument("--speed", type=float, default=1.0, help="times real time (0: as fast as possible)")
    s.add_argument("--no-diarize", dest="diarize", action="store_false")
    s.add_argument("--num-speakers", type=int)
    s.add_argument("--min-speakers", type=int)
    s.add_argument("--max-speakers", type=int)
    s.add_argument("--language")
    s.add_argument("--resume-test", action="store_true", help="drop the connection half-way and resume")


def run(args: argparse.Namespace) -> int:

    pieces: list[bytes] = []
    try:
        decode_stream(args.file, lambda s: pieces.append((np.clip(s, -1.0, 1.0) * 32767).astype("<i2").tobytes()))
    except (OSError, AudioDecodeError) as exc:
        print(f"whospoke: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    pcm = b"".join(pieces)
    params = {"diarize": str(args.diarize).lower()}
    for name in ("num_speakers", "min_speakers", "max_speakers", "language"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    printer = Printer(sys.stdout.isatty())
    client = StreamClient(args.url, params=params, api_key=args.api_key, speed=args.speed, on_event=printer)
    try:
        result = asyncio.run(client.run(pcm, drop_at_bytes=len(pcm) // 2 if args.resume_test else None))
    except StreamError as exc:
        print(f"\nwhospoke: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"whospoke: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    printer.close()
    if args.resume_test:
        print(f"(resumed {result.reconnects} time(s); session {result.session_id})", file=sys.stderr)
    return 0


class Printer:
    """Partials of the open utterance on one line, rewritten in place on a terminal (stable words in grey,
    the tentative tail after them dimmer, replaced by each partial); finals above it. Without a terminal,
    only stable words are printed (a log cannot take words back)."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.pending = ""

    def __call__(self, received) -> None:
        event = received.event
        kind = event["type"]
        if kind == "partial":
            self.pending += event["text"]
            if self.tty:
                tentative = event.get("tentative", "")
                sys.stdout.write(f"{CLEAR}{GREY}…{self.pending}{DIM}{tentative}{RESET}")
            elif event["text"].strip():
                sys.stdout.write(f"… {event['text'].strip()}\n")
        elif kind == "speaker_update":
            utterances = event["utterances"]
            items = ("utterances " if len(utterances) > 1 else "utterance ") + ", ".join(str(u) for u in utterances)
            line = f"({items}: {event['previous']} → {event['speaker']})"
            sys.stdout.write(f"{CLEAR}{line}\n" if self.tty else f"{line}\n")
            if self.tty and self.pending:
                sys.stdout.write(f"{GREY}…{self.pending}{RESET}")
        elif kind == "final":
            self.pending = ""
            speaker = event["speaker"] or "-"
            line = f"[{_clock(event['start'])} → {_clock(event['end'])}] {speaker}: {event['text']}"
            sys.stdout.write(f"{CLEAR}{line}\n" if self.tty else f"{line}\n")
        elif kind == "error":
            sys.stdout.write(f"{CLEAR if self.tty else ''}! {event['code']}: {event['message']}\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.tty and self.pending:
            sys.stdout.write(CLEAR)


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m):02d}:{s:04.1f}"
