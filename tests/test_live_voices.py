"""Named speakers live: voices enrolled once name the speakers of `/ws/stream` (`voices=`, `identify=true`)
and `/v1/realtime` (`audio.input.transcription.voices` / `.identify`), on a real server with API keys
(voices are a key's own), the real bundled models, the two-speaker fixture (LibriVox reader + JFK).

The reader is enrolled from one_speaker.flac's last two sentences, which two_speakers.flac does not
contain; JFK from his first turn in two_speakers.flac, so his later turns are heard for the first time."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import websockets
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, load_audio, load_reference
from live_server import live_server
from realtime_support import Session, connect, pcm24, sdk, silence
from scoring import reference_speaker_at

from shared.api.identity import key_id
from shared.live.client import StreamClient, StreamError
from shared.live.naming import VoiceNames
from shared.pipeline.identify import KnownVoice

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

KEY, OTHER = "lv-key-one-0123456789", "lv-key-two-0123456789"
TURNS = load_reference(TWO_SPEAKERS)["turns"]
NAMES = {"librivox_reader": "Reader", "jfk": "JFK"}
JFK_FIRST = (TURNS[1]["start"], TURNS[1]["end"])
SEGMENT = "conversation.item.input_audio_transcription.segment"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_voice_names_one_voice_one_speaker_and_a_margin_to_move():
    alice, bob = KnownVoice("a" * 32, "Alice", unit([1, 0, 0])), KnownVoice("b" * 32, "Bob", unit([0, 1, 0]))
    names = VoiceNames([alice, bob], threshold=0.75)
    assert names.update("SPEAKER_00", unit([1, 0.2, 0])).name == "Alice"  # cos 0.98
    assert names.update("SPEAKER_01", unit([1, 0.3, 0])) is None  # Alice is taken, not clearly better (0.96)
    assert names.update("SPEAKER_02", unit([0.3, 0, 1])) is None  # nobody known (0.29)
    kept = names.update("SPEAKER_00", unit([1, 0.9, 0]))  # drifts towards Bob (0.74 / 0.67): keeps Alice
    assert (kept.name, kept.confidence) == ("Alice", pytest.approx(0.743, abs=0.002))
    assert names.update("SPEAKER_01", unit([1, 0.05, 0])).name == "Alice"  # 0.999: clearly better, takes her
    assert names.identity("SPEAKER_00") is None
    assert names.update("SPEAKER_00", unit([0.2, 1, 0])).name == "Bob"  # back under a name of its own
    assert not VoiceNames([], 0.75) and names.update("SPEAKER_03", unit([0, 0, 1])) is None


def enrol(storage) -> dict[str, str]:
    """Enrol the reader and JFK for KEY into the server's voice store, through the VoiceService (its
    voiceprints from the real encoder, loaded in this process): {name: voice_id}."""
    from shared.core.config import Settings
    from shared.media.clip_store import ClipStore
    from shared.media.pcm import ArrayAudio
    from shared.pipeline.models import StageWorker
    from shared.pipeline.runner import InProcessRunner
    from shared.service.transcription import TranscriptionService
    from shared.service.voices import Sample, VoiceService
    from shared.voices.sqlite_store import VOICES_DB, SqliteVoiceStore

    settings = Settings(_env_file=None, audio_storage_path=storage)
    store = SqliteVoiceStore(storage / VOICES_DB)
    try:
        with InProcessRunner(StageWorker(settings)) as runner:
            voices = VoiceService(settings, TranscriptionService(settings, runner, ClipStore(storage), store), store)
            owner = key_id(KEY)
            reader = voices.enroll(owner, "Reader", [Sample(ArrayAudio(load_audio(ONE_SPEAKER)), [(12.6, 21.8)])])
            jfk = voices.enroll(owner, "JFK", [Sample(ArrayAudio(load_audio(TWO_SPEAKERS)), [JFK_FIRST])])
    finally:
        store.close()
    return {"Reader": reader.voice_id, "JFK": jfk.voice_id}


@pytest.fixture(scope="module")
def voiced(tmp_path_factory):
    storage = tmp_path_factory.mktemp("live-voices")
    with live_server(storage, env={"API_KEYS": f"{KEY},{OTHER}"}) as server:
        yield server, enrol(storage)


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws/stream"


def pcm16(path) -> bytes:
    return (np.clip(load_audio(path), -1, 1) * 32767).astype("<i2").tobytes()


def named_share(pieces) -> float:
    """Share of the words (start, end, speaker) whose speaker is the name of the reference speaker there."""
    pairs = [(speaker, reference_speaker_at((a + b) / 2, TURNS)) for a, b, speaker in pieces]
    pairs = [(got, ref) for got, ref in pairs if ref is not None]
    return sum(got == NAMES[ref] for got, ref in pairs) / max(len(pairs), 1)


def first_named(finals, start_key="start", end_key="end"):
    """Per reference speaker: seconds of its voice heard (from its first turn's start) when its first final
    came out with its name, and whether that was its first final."""
    out = {}
    for ref, name in NAMES.items():
        own = [f for f in finals if reference_speaker_at((f[start_key] + f[end_key]) / 2, TURNS) == ref]
        named = [f for f in own if f["speaker"] == name]
        first_turn = next(t for t in TURNS if t["speaker"] == ref)
        out[name] = (round(named[0][end_key] - first_turn["start"], 2), named[0] is own[0]) if named else None
    return out


@pytest.mark.slow
def test_stream_names_enrolled_speakers(voiced):
    server, ids = voiced
    client = StreamClient(ws_url(server), api_key=KEY, params={"identify": "true"}, speed=0)
    run = asyncio.run(client.run(pcm16(TWO_SPEAKERS), timeout=300))
    finals = [f for f in run.finals if f["text"]]
    words = [(w["start"], w["end"], f["speaker"]) for f in finals for w in f["words"]]
    share = named_share(words)
    print(f"\nnamed words {share:.3f}; finals {[(f['start'], f['end'], f['speaker'], f['speaker_confidence']) for f in finals]}")
    print("first named (s of the voice heard, was it its first final):", first_named(finals))
    assert share >= 0.9
    assert {f["speaker"] for f in finals} == {"Reader", "JFK"}
    for f in finals:
        assert f["speaker_id"] == ids[f["speaker"]]
        assert 0.75 <= f["speaker_confidence"] <= 1.0
        assert all(w["speaker"] == f["speaker"] for w in f["words"])
    named = {e["speaker"]: e for e in run.of("speaker")}
    assert set(named) >= {"Reader", "JFK"} and named["JFK"]["speaker_id"] == ids["JFK"]
    assert all(first for _s, first in first_named(finals).values())  # each voice named from its first final


@pytest.mark.slow
def test_stream_names_only_the_voices_asked_for(voiced):
    server, ids = voiced
    client = StreamClient(ws_url(server), api_key=KEY, params={"voices": ids["JFK"]}, speed=0)
    run = asyncio.run(client.run(pcm16(TWO_SPEAKERS)[: 32000 * 19], timeout=300))  # the first four turns
    finals = [f for f in run.finals if f["text"]]
    speakers = {f["speaker"] for f in finals}
    assert "JFK" in speakers and "Reader" not in speakers
    assert all(f["speaker_id"] is None and f["speaker_confidence"] is None
               for f in finals if f["speaker"] != "JFK")


async def refused(url: str, key: str) -> tuple[dict, int]:
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        event = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        return event, ws.close_code


@pytest.mark.slow
def test_stream_refuses_bad_and_foreign_voices(voiced):
    server, ids = voiced
    url = ws_url(server)
    event, code = asyncio.run(refused(f"{url}?voices=not-a-voice", KEY))
    assert (event["code"], code) == ("invalid_option", 4400) and "voice id" in event["message"]
    event, code = asyncio.run(refused(f"{url}?voices={ids['Reader']}", OTHER))  # KEY's voice, not OTHER's
    assert (event["code"], code) == ("invalid_option", 4400)
    assert ids["Reader"] in event["message"] and "your enrolled voices" in event["message"]
    with pytest.raises(StreamError, match="invalid_option"):
        asyncio.run(StreamClient(url, api_key=KEY, params={"voices": ",".join([ids["JFK"]] * 101)}).run(b""))


def open_realtime(url: str, key: str, transcription: dict) -> Session:
    session = Session(connect(sdk(url, key)).enter()).start()
    session.wait(lambda s: s.count("session.created"), 30)
    session.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe", "language": "en", **transcription}}}}})
    session.wait(lambda s: s.count("session.updated") or s.errors(), 30)
    return session


@pytest.mark.slow
def test_realtime_names_speakers_in_segments(voiced):
    server, ids = voiced
    session = open_realtime(server.url, KEY, {"voices": [ids["Reader"], ids["JFK"]]})
    try:
        assert session.errors() == []
        echoed = session.of("session.updated")[-1].session.audio.input.transcription
        assert echoed.model_extra["voices"] == [ids["Reader"], ids["JFK"]]
        session.append(pcm24() + silence(1200), piece_ms=400, speed=8)
        session.wait(lambda s: s.settled() and s.count(COMPLETED) >= 5, 240)
    finally:
        session.connection.close()
    segments = [{"start": s.start, "end": s.end, "speaker": s.speaker} for s in session.of(SEGMENT)]
    share = sum(s["end"] - s["start"] for s in segments
                if s["speaker"] == NAMES.get(reference_speaker_at((s["start"] + s["end"]) / 2, TURNS))) / sum(
        s["end"] - s["start"] for s in segments)
    print(f"\nrealtime: named share of segment time {share:.3f}; {segments}; first named {first_named(segments)}")
    assert share >= 0.9 and {s["speaker"] for s in segments} == {"Reader", "JFK"}


@pytest.mark.slow
def test_realtime_refuses_bad_and_foreign_voices(voiced):
    server, ids = voiced
    param = "session.audio.input.transcription.voices"
    for key, voices, says in ((KEY, ["nope"], "voice id"), (OTHER, [ids["JFK"]], "your enrolled voices")):
        session = open_realtime(server.url, key, {"voices": voices})
        try:
            error = session.of("error")[-1].error
            assert (error.code, error.param) == ("invalid_session_config", param) and says in error.message
            assert not session.of("session.updated")  # nothing of the update applied; the session goes on
        finally:
            session.connection.close()
