"""`/v1/realtime?intent=transcription` on a real server on loopback, driven by the official `openai` SDK's
realtime client, with the real bundled models on the two-speaker fixture (LibriVox reader + JFK)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from audio_fixtures import load_reference
from live_server import live_server
from realtime_support import (
    Session,
    b64,
    connect,
    pcm24,
    sdk,
    silence,
    span,
    word_recall,
    words_of,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from shared.api.realtime_config import Problem, TranscriptionSession

# the SDK's own use of websockets' sync client (openai/lib/_websocket.py), not this test's
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

REF = load_reference()
TURNS = REF["turns"]
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
SEGMENT = "conversation.item.input_audio_transcription.segment"
UPDATE = {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 24000},
    "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 600},
}}}


@pytest.fixture(scope="module")
def pcm() -> bytes:
    return pcm24()


def open_session(url: str, api_key: str = "no-key", update: dict | None = UPDATE):
    manager = connect(sdk(url, api_key))
    session = Session(manager.enter()).start()
    session.wait(lambda s: s.count("session.created") or s.errors(), 30)
    if update is not None:
        session.send({"type": "session.update", "session": update})
        session.wait(lambda s: s.count("session.updated") or s.errors(), 30)
    return session


def close(session: Session) -> None:
    session.connection.close()


def speakers_match_reference(segments, offset: float = 0.0) -> dict[str, str]:
    """Each segment's reference speaker (the turn it overlaps most; the session's audio began `offset`
    seconds into the fixture) -> its label, checked one to one."""
    mapping: dict[str, str] = {}
    wrong = 0
    for seg in segments:
        start, end = seg.start + offset, seg.end + offset
        turn = max(TURNS, key=lambda t: min(t["end"], end) - max(t["start"], start))
        label = mapping.setdefault(turn["speaker"], seg.speaker)
        wrong += label != seg.speaker
    assert len(set(mapping.values())) == 2, mapping
    assert wrong <= 1, [(s.start, s.speaker) for s in segments]
    return mapping


def transcripts(session: Session) -> str:
    return " ".join(e.transcript for e in session.of(COMPLETED))


# --- session.update without a server: merging, and what may change once audio has arrived ---
def test_session_update_merges_the_fields_given(settings):
    session = TranscriptionSession(settings)
    session.update({"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 0.7}}}}, started=False)
    vad = session.object()["audio"]["input"]["turn_detection"]
    assert (vad["threshold"], vad["silence_duration_ms"]) == (0.7, settings.stream_silence_ms)
    assert session.live.vad_threshold == 0.7 and session.live.turn_detection

    session.update({"audio": {"input": {"turn_detection": None}}}, started=False)
    assert session.object()["audio"]["input"]["turn_detection"] is None and not session.live.turn_detection
    session.update({"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}, started=False)
    assert session.object()["audio"]["input"]["turn_detection"]["threshold"] == 0.5  # a fresh one: the defaults

    session.update({"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}, started=True)
    assert session.object()["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"  # an alias
    with pytest.raises(Problem) as refused:
        session.update({"audio": {"input": {"transcription": {"language": "en"}}}}, started=True)
    assert refused.value.code == "session_already_started"
    assert session.live.options.language is None  # nothing of a refused update applies


# --- the engine's events as Realtime server events, without a server ---
def translator(settings):
    from types import SimpleNamespace

    from shared.api.realtime import Realtime

    websocket = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(service=None)), scope={})
    return Realtime(websocket, None, settings)


def final(item: int, speaker: str | None, text: str = " Hello there."):
    from shared.live import events as ev

    return ev.FinalUtterance(item=item, start=float(item), end=item + 0.9, text=text.strip(), words=(),
                             speaker=speaker, language="en")


def test_deltas_carry_stable_words_only(settings):
    from shared.core.domain import Word
    from shared.live import events as ev

    rt = translator(settings)
    rt.translate(ev.SpeechStarted(0, 0.0))
    word = Word(word=" Hello", start=0.1, end=0.4, probability=0.9)
    assert rt.translate(ev.PartialWords(0, (), (word,))) == []  # a tentative tail alone: no delta
    (delta,) = rt.translate(ev.PartialWords(0, (word,), (word,)))
    assert delta["type"] == DELTA and delta["delta"] == " Hello"  # the tentative tail is not in it


def test_speaker_update_resends_the_items_segments(settings):
    from openai.types.realtime import ConversationItemInputAudioTranscriptionSegment as Segment

    from shared.api import realtime
    from shared.live import events as ev

    rt = translator(settings)
    sent = {}
    for item, speaker, text in [(0, "SPEAKER_00", "One."), (1, "SPEAKER_01", "Two."), (2, None, "Three."),
                                (3, "SPEAKER_01", "")]:
        rt.translate(ev.SpeechStarted(item, float(item)))
        rt.translate(ev.SpeechStopped(item, item + 0.9))
        sent[item] = [e for e in rt.translate(final(item, speaker, text)) if e["type"] == SEGMENT]
    original = sent[1][0]
    out = rt.translate(ev.SpeakerUpdate((1, 2, 3, 9), "SPEAKER_00", "SPEAKER_01"))
    # item 1 again: the same item_id and segment id, the new speaker; items 2 and 3 had no segment, 9 is unknown
    assert out == [{**original, "speaker": "SPEAKER_00"}]
    Segment.model_validate({"event_id": "event_1", **out[0]})  # the SDK's own type reads it
    # a second correction builds on the first
    (again,) = rt.translate(ev.SpeakerUpdate((1,), "Ada", "SPEAKER_00", "voice_1", 0.8))
    assert (again["id"], again["item_id"], again["speaker"], again["text"]) == (
        original["id"], original["item_id"], "Ada", "Two.")

    # bounded: the segments of the last KEPT_SEGMENTS finals are kept
    for item in range(4, 4 + realtime.KEPT_SEGMENTS):
        rt.translate(ev.SpeechStarted(item, float(item)))
        rt.translate(final(item, "SPEAKER_00"))
    assert len(rt.segments) == realtime.KEPT_SEGMENTS and rt.items == {}
    assert rt.translate(ev.SpeakerUpdate((0, 1), "SPEAKER_02", "SPEAKER_00")) == []
    assert len(rt.translate(ev.SpeakerUpdate((4, 5), "SPEAKER_02", "SPEAKER_00"))) == 2


@pytest.mark.slow
def test_server_vad_session_with_the_sdk(server, pcm):
    session = open_session(server.url)
    created, updated = session.of("session.created")[0].session, session.of("session.updated")[0].session
    assert created.type == updated.type == "transcription"
    assert updated.audio.input.format.rate == 24000
    assert updated.audio.input.transcription.language == "en"
    assert updated.audio.input.turn_detection.type == "server_vad"

    session.append(pcm + silence(1200), piece_ms=250, speed=1.0)  # real time: partials have time to run
    session.wait(lambda s: s.settled() and s.count(COMPLETED) >= 5, 180)
    close(session)
    assert session.errors() == []

    # finals: the reference's words, speakers, and one item each
    assert word_recall(REF["text"], transcripts(session)) >= 0.75, transcripts(session)
    segments = session.of(SEGMENT)
    # one segment per item, before its completed event; an item too short to tell a voice by (a lone
    # "Not!") may carry none, so every item of a second or more must have one
    completed = session.of(COMPLETED)
    assert len({e.item_id for e in segments}) == len(segments) <= len(completed)
    assert {e.item_id for e in completed if e.usage.seconds >= 1.0} <= {e.item_id for e in segments}
    speakers_match_reference(segments)
    committed = session.of("input_audio_buffer.committed")
    assert [e.item_id for e in session.of(COMPLETED)] == [e.item_id for e in committed]
    assert [e.previous_item_id for e in committed] == [None] + [e.item_id for e in committed[:-1]]

    # speech events at the reference's turns: each turn opens near a start and closes near a stop
    starts = [e.audio_start_ms / 1000 for e in session.of("input_audio_buffer.speech_started")]
    stops = [e.audio_end_ms / 1000 for e in session.of("input_audio_buffer.speech_stopped")]
    for turn in TURNS:
        assert min(abs(s - (turn["start"] - 0.3)) for s in starts) < 0.45, (turn, starts)
        assert min(abs(s - (turn["end"] + 0.2)) for s in stops) < 0.6, (turn, stops)
    assert all(a < b for a, b in zip(starts, stops)) and len(starts) == len(stops) == len(committed)

    # deltas: before their item's final, words the final mostly confirms
    deltas = session.timed(DELTA)
    assert deltas, "no partial transcript arrived"
    final_at = {e.item_id: t for t, e in session.timed(COMPLETED)}
    final_text = {e.item_id: e.transcript for e in session.of(COMPLETED)}
    by_item: dict[str, str] = {}
    for t, e in deltas:
        assert t < final_at[e.item_id] and e.delta.strip()
        by_item[e.item_id] = by_item.get(e.item_id, "") + e.delta
    for item, text in by_item.items():
        assert word_recall(text, final_text[item]) >= 0.6, (text, final_text[item])

    # latencies (stream time is the server's clock of audio received)
    stopped = {e.item_id: e.audio_end_ms for e in session.of("input_audio_buffer.speech_stopped")}
    final_lat = [final_at[i] - session.sent_at(ms) for i, ms in stopped.items()]
    started = {e.item_id: e.audio_start_ms for e in session.of("input_audio_buffer.speech_started")}
    first_delta = {}
    for t, e in deltas:
        first_delta.setdefault(e.item_id, t - session.sent_at(started[e.item_id]))
    print(f"\nrealtime: {len(committed)} items, {len(deltas)} deltas ({len(words_of(''.join(by_item.values())))} words"
          f"), recall {word_recall(REF['text'], transcripts(session)):.2f}; final after speech end: "
          f"{', '.join(f'{x:.2f}' for x in final_lat)} s; first delta after speech start: "
          f"{', '.join(f'{x:.2f}' for x in first_delta.values())} s")


@pytest.mark.slow
def test_manual_commits(server, pcm):
    manual = json.loads(json.dumps(UPDATE))
    manual["audio"]["input"]["turn_detection"] = None
    session = open_session(server.url, update=manual)
    assert session.of("session.updated")[0].session.audio.input.turn_detection is None

    session.connection.input_audio_buffer.commit()
    assert session.wait_error("input_audio_buffer_commit_empty")

    session.append(span(pcm, 7.5, 12.2), speed=8)  # a JFK turn, then dropped
    session.connection.input_audio_buffer.clear()
    session.wait(lambda s: s.count("input_audio_buffer.cleared"), 30)
    for turn in (TURNS[0], TURNS[2]):
        session.append(span(pcm, turn["start"] - 0.25, turn["end"] + 0.3), speed=8)
        session.connection.input_audio_buffer.commit()
    session.wait(lambda s: s.count(COMPLETED) == 2, 180)
    close(session)

    assert session.errors() == ["input_audio_buffer_commit_empty"]
    assert session.count("input_audio_buffer.speech_started") == session.count("input_audio_buffer.speech_stopped") == 0
    committed, completed = session.of("input_audio_buffer.committed"), session.of(COMPLETED)
    assert [e.item_id for e in completed] == [e.item_id for e in committed]
    assert committed[1].previous_item_id == committed[0].item_id
    for turn, final in zip((TURNS[0], TURNS[2]), completed):
        assert word_recall(turn["text"], final.transcript) >= 0.6, final.transcript
    segments = session.of(SEGMENT)
    assert len({s.speaker for s in segments}) == 1  # the same reader twice
    # the cleared audio has no item, but stream time counts it (as audio_start_ms counts all audio written)
    assert segments[0].start == pytest.approx(12.2 - 7.5, abs=0.1)


@pytest.mark.slow
def test_bad_inputs_answer_errors_and_the_session_goes_on(server, pcm):
    session = open_session(server.url, update=None)
    raw = session.connection.send_raw
    cases = [
        (lambda: raw("{not json"), "invalid_json"),
        (lambda: raw("[1, 2]"), "invalid_event"),
        (lambda: session.send({"type": "response.create", "event_id": "evt_client_1"}), "unknown_event_type"),
        (lambda: session.connection.input_audio_buffer.append(audio="%%% not base64 %%%"), "invalid_audio"),
        (lambda: session.send({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}}),
         "unsupported_audio_format"),
        (lambda: session.send({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 96000}}}}}),
         "unsupported_audio_format"),
        (lambda: session.send({"type": "session.update", "session": {"type": "realtime"}}), "unsupported_session_type"),
        (lambda: session.send({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}}}), "invalid_session_config"),
        (lambda: session.send({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"turn_detection": {"type": "semantic_vad"}}}}}), "unsupported_turn_detection"),
        (lambda: session.send({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"transcription": {"language": "xx"}}}}}), "unsupported_language"),
        (lambda: session.connection.input_audio_buffer.append(audio=b64(silence(23_000))), "frame_too_large"),
        (lambda: session.connection.input_audio_buffer.commit(), "input_audio_buffer_commit_empty"),
    ]
    for send, code in cases:
        send()
        error = session.wait_error(code, 30).error
        assert error.type == "invalid_request_error" and error.message
    errors = {e.error.code: e.error for e in session.of("error")}
    assert errors["unknown_event_type"].event_id == "evt_client_1"
    assert errors["invalid_session_config"].param == "session.audio.input.turn_detection.threshold"
    assert session.count("session.updated") == 0  # a refused update changes nothing

    # audio before any session.update: the defaults (server VAD, 24 kHz) serve
    turn = TURNS[3]
    session.append(span(pcm, turn["start"] - 0.3, turn["end"]) + silence(1000), speed=4)
    session.send({"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"turn_detection": None}}}})
    session.wait_error("session_already_started")
    session.wait(lambda s: s.count(COMPLETED) == 1 and s.settled(), 120)
    close(session)
    assert word_recall(turn["text"], session.of(COMPLETED)[0].transcript) >= 0.6
    assert session.close_code in (None, 1000)


@pytest.mark.slow
def test_two_concurrent_sessions_keep_their_own_speakers(server, pcm):
    """Both hear the fixture at once, the second from JFK's first turn on: each names the first voice it
    hears SPEAKER_00, so JFK is SPEAKER_01 in one and SPEAKER_00 in the other (one shared tracker could
    not do that)."""
    skip = TURNS[1]["start"] - 0.4
    audio = [pcm + silence(1000), span(pcm, skip, REF["duration"]) + silence(1000)]
    sessions = [open_session(server.url), open_session(server.url, update=None)]
    threads = [threading.Thread(target=s.append, args=(a,), kwargs={"piece_ms": 400, "speed": 4})
               for s, a in zip(sessions, audio)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for session in sessions:
        session.wait(lambda s: s.settled() and s.count(COMPLETED) >= 4, 240)
        close(session)
        assert session.errors() == []
    first, second = speakers_match_reference(sessions[0].of(SEGMENT)), speakers_match_reference(
        sessions[1].of(SEGMENT), offset=skip)
    assert first == {"librivox_reader": "SPEAKER_00", "jfk": "SPEAKER_01"}
    assert second == {"jfk": "SPEAKER_00", "librivox_reader": "SPEAKER_01"}
    assert word_recall(REF["text"], transcripts(sessions[0])) >= 0.7
    later = " ".join(t["text"] for t in TURNS[1:])
    assert word_recall(later, transcripts(sessions[1])) >= 0.7
    ids = [{e.item_id for e in s.of(COMPLETED)} for s in sessions]
    assert not ids[0] & ids[1]


# --- limits, on a server with API keys, one stream per key, a short idle timeout and session length ---
KEYS = ("rt-key-one-0123456789", "rt-key-two-0123456789")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    env = {"API_KEYS": ",".join(KEYS), "STREAM_MAX_PER_KEY": "1", "STREAM_IDLE_S": "3",
           "STREAM_MAX_SESSION_S": "3"}
    with live_server(tmp_path_factory.mktemp("realtime-keyed"), env=env) as s:
        yield s


def open_keyed(url: str, key: str) -> Session:
    """A session for `key`, once the server has let go of the key's previous one (it does when it
    reads that one's close)."""
    deadline = time.monotonic() + 10
    while True:
        session = open_session(url, key, update=None)
        if session.errors() != ["too_many_streams"] or time.monotonic() > deadline:
            return session
        close(session)
        time.sleep(0.2)


def wait_closed(session: Session, timeout: float = 30) -> int:
    session.wait(lambda s: s.close_code is not None, timeout)
    return session.close_code


@pytest.mark.slow
def test_api_keys(keyed):
    with pytest.raises(InvalidStatus) as refused:
        connect(sdk(keyed.url, "not-a-key")).enter()
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"

    session = open_keyed(keyed.url, KEYS[0])
    assert session.count("session.created") == 1 and not session.errors()
    close(session)

    url = keyed.url.replace("http", "ws") + "/v1/realtime?intent=transcription"  # browsers: the key as a subprotocol
    with ws_connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{KEYS[1]}"]) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"


@pytest.mark.slow
def test_too_many_streams_per_key(keyed):
    first = open_keyed(keyed.url, KEYS[0])
    second = Session(connect(sdk(keyed.url, KEYS[0])).enter()).start()
    assert wait_closed(second) == 4429
    assert second.errors() == ["too_many_streams"]
    other_key = open_keyed(keyed.url, KEYS[1])  # the limit is per key
    assert other_key.count("session.created") == 1
    close(first)
    close(other_key)


@pytest.mark.slow
def test_idle_timeout_and_unknown_intent(keyed):
    started = time.monotonic()
    idle = open_keyed(keyed.url, KEYS[0])
    assert wait_closed(idle) == 4408
    assert idle.errors() == ["idle_timeout"] and time.monotonic() - started >= 3

    wrong = Session(sdk(keyed.url, KEYS[1]).realtime.connect(model="gpt-realtime").enter()).start()
    assert wait_closed(wrong) == 4400
    assert wrong.errors() == ["unsupported_intent"]


@pytest.mark.slow
def test_session_length_limit_delivers_what_was_heard(keyed, pcm):
    session = open_keyed(keyed.url, KEYS[0])
    session.append(span(pcm, 0.0, 4.0), speed=20)
    assert wait_closed(session, 120) == 4413
    assert session.errors() == ["session_too_long"]
    finals = session.of(COMPLETED)
    assert len(finals) == 1 and {"john", "dashwood"} <= set(words_of(finals[0].transcript))
