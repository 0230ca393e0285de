"""The streaming bench's OpenAI Realtime side: the official `openai` SDK's realtime client streams a clip
to `/v1/realtime?intent=transcription` (24 kHz PCM16, base64 appends), paced like live audio.

Deltas carry no word times, so a delta word's audio end is taken from the native protocol's finals of
the same clip (the same server, the same audio: the same words at the same times, matched in order).
Deltas are stable words only (this protocol sends no tentative words): a word's first appearance is its
stable one.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import time

import av
import numpy as np
from openai import AsyncOpenAI

from local_dev.bench.partial_timing import intervals
from local_dev.eval.scoring import der, normalize_words, wer

RATE = 24_000
FRAME_S = 0.1


def pcm24(pcm16k: bytes) -> bytes:
    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm16k, "<i2").reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16_000
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    return b"".join(f.to_ndarray().tobytes() for f in [*resampler.resample(frame), *resampler.resample(None)])


async def stream(url: str, pcm: bytes, speed: float) -> tuple[list[tuple[float, dict]], float]:
    """Every server event with its arrival (wall seconds since the first append)."""
    client = AsyncOpenAI(base_url=url, api_key="bench")
    events: list[tuple[float, dict]] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": RATE}, "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 600}}}}})
        started = time.monotonic()
        step = int(FRAME_S * RATE) * 2

        async def send() -> None:
            for at in range(0, len(pcm), step):
                await conn.send({"type": "input_audio_buffer.append",
                                 "audio": base64.b64encode(pcm[at : at + step]).decode()})
                due = started + (at + step) / (2 * RATE) / speed
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await conn.send({"type": "input_audio_buffer.commit"})  # the last utterance, if still open

        sender = asyncio.create_task(send())
        stopped = completed = 0
        async for event in conn:
            events.append((time.monotonic() - started, event.model_dump()))
            stopped += event.type == "input_audio_buffer.committed"
            completed += event.type in ("conversation.item.input_audio_transcription.completed",
                                        "conversation.item.input_audio_transcription.failed")
            # done once the last commit is answered: by its item's transcript, or by an error when nothing
            # was open (the last utterance had closed on its own)
            if sender.done() and completed >= stopped and events[-1][1]["type"].endswith(("completed", "failed", "error")):
                break
        await sender
    return events, started


def run_realtime(url: str, clip, speed: float, into, native_words: list[tuple[str, float]]) -> None:
    events, _ = asyncio.run(stream(url, pcm24(clip.pcm), speed))
    order: list[str] = []  # item ids in commit order
    stopped_at: dict[str, float] = {}
    completed: dict[str, tuple[float, str]] = {}
    segments: list[dict] = []
    deltas: list[tuple[float, str, str]] = []  # (arrival, item, word)
    delta_events: list[tuple[float, str]] = []  # (arrival, item), one per delta event
    for arrived, e in events:
        kind = e["type"]
        if kind == "input_audio_buffer.speech_stopped":
            stopped_at[e["item_id"]] = e["audio_end_ms"] / 1000
        elif kind == "input_audio_buffer.committed":
            order.append(e["item_id"])
        elif kind == "conversation.item.input_audio_transcription.delta":
            deltas += [(arrived, e["item_id"], w) for w in normalize_words(e["delta"])]
            delta_events.append((arrived, e["item_id"]))
        elif kind == "conversation.item.input_audio_transcription.completed":
            completed[e["item_id"]] = (arrived, e["transcript"])
        elif kind == "conversation.item.input_audio_transcription.segment":
            segments.append(e)
    for item, (arrived, _text) in completed.items():
        if item in stopped_at:
            into.final_latency.append(arrived - stopped_at[item] / speed)
    into.partial_intervals += intervals(delta_events)  # deltas are its partials (stable words only)
    # deltas are append-only by construction; count the words a completed transcript changed
    for item in order:
        said = [w for _a, i, w in deltas if i == item]
        final = normalize_words(completed.get(item, (0, ""))[1])
        into.partial_words += len(said)
        into.changed_words += sum(w not in final for w in said)
    matcher = difflib.SequenceMatcher(a=[w for _a, _i, w in deltas], b=[w for w, _t in native_words], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            latency = deltas[block.a + k][0] - native_words[block.b + k][1] / speed
            into.first_word_latency.append(latency)  # deltas are stable words: no word is shown sooner
            into.stable_latency.append(latency)
    text = " ".join(completed[i][1] for i in order if i in completed)
    into.wers.append(wer(clip.offline_text, text))
    turns = "".join(f"SPEAKER file 1 {s['start']:.3f} {s['end'] - s['start']:.3f} <NA> <NA> {s['speaker']} <NA> <NA>\n"
                    for s in segments if s.get("speaker"))
    into.ders.append(der(clip.rttm, turns))
    into.audio_s += clip.duration
