"""`/ws/stream` against a real server on loopback, with the `websockets` client (shared/live/client.py):
PCM16 and an Opus WebM stream encoded by PyAV, partials and finals with speakers, resume after the TCP
connection is cut, two sessions at once, every bad input, and the limits."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from audio_fixtures import ONE_SPEAKER, TWO_SPEAKERS, encode_as, load_audio, load_reference, reference_turns
from live_server import live_server
from scoring import reference_speaker_at, wer, words_of

from shared.live.client import StreamClient, StreamError

def pcm16(path) -> bytes:
    import numpy as np

    return (np.clip(load_audio(path), -1, 1) * 32767).astype("<i2").tobytes()


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws/stream"


def stream(server, data: bytes, **kwargs):
    drop = kwargs.pop("drop_at_bytes", None)
    client = StreamClient(ws_url(server), **kwargs)
    return asyncio.run(client.run(data, drop_at_bytes=drop, timeout=300))


def speakers_match_reference(finals, turns) -> float:
    """Share of final words whose speaker maps (one to one, by majority) onto the reference speaker."""
    from collections import Counter

    pairs = [(f["speaker"], reference_speaker_at((w["start"] + w["end"]) / 2, turns))
             for f in finals for w in f["words"]]
    pairs = [(h, r) for h, r in pairs if r is not None]
    mapping = {h: Counter(r for hh, r in pairs if hh == h).most_common(1)[0][0] for h in {h for h, _ in pairs}}
    return sum(mapping[h] == r for h, r in pairs) / max(len(pairs), 1)


@pytest.fixture(scope="module")
def two_speakers_run(server):
    return stream(server, pcm16(TWO_SPEAKERS), speed=1.0)


@pytest.mark.slow
def test_pcm16_stream_gives_partials_finals_and_speakers(two_speakers_run):
    run = two_speakers_run
    finals = run.finals
    reference = load_reference(TWO_SPEAKERS)
    assert wer(reference["text"], run.transcript()) < 0.25
    assert len({f["speaker"] for f in finals}) == 2
    turns = [dict(speaker=s, start=a, end=b) for s, a, b in reference_turns(TWO_SPEAKERS)]
    assert speakers_match_reference(finals, turns) > 0.9
    # finals in stream time, in order, each word inside its utterance
    assert [f["utterance"] for f in finals] == sorted(f["utterance"] for f in finals)
    for f in finals:
        assert all(f["start"] - 0.05 <= w["start"] <= w["end"] <= f["end"] + 0.05 for w in f["words"])
    # partials: only new stable words, each reported once, and they are words of the utterance's final
    partials = run.of("partial")
    assert partials, "no partial words at real time"
    by_item = {f["utterance"]: words_of(f["text"]) for f in finals}
    said = [(w, p["utterance"]) for p in partials for w in words_of(p["text"])]
    assert sum(w in by_item.get(item, []) for w, item in said) >= 0.7 * len(said), (said, by_item)
    assert any(p["words"] for p in partials)
    ends = {}
    for p in partials:  # within an utterance, each partial starts where the last one ended
        for w in p["words"]:
            assert w["start"] >= ends.get(p["utterance"], 0.0) - 0.11
            ends[p["utterance"]] = w["end"]
        # its tentative tail: well-formed like the stable words, in order, inside its utterance (its times are
        # the newest decode's, which may place a word a little earlier than the stable words' first sighting)
        assert p["text"] == "".join(w["word"] for w in p["words"])
        assert p["tentative"] == "".join(w["word"] for w in p["tentative_words"])
        final = next((f for f in finals if f["utterance"] == p["utterance"]), None)
        # an utterance cut at a speaker change (the next one opens where it ends): its partials may have
        # heard past the cut, words the next utterance's final holds
        after = final and next((f for f in finals if f["start"] == final["end"]), None)
        previous = 0.0
        for w in p["tentative_words"]:
            assert set(w) == {"word", "start", "end", "probability"} and 0 <= w["probability"] <= 1
            assert previous - 0.11 <= w["start"] <= w["end"]
            assert final is None or final["start"] - 0.5 <= w["start"] <= w["end"] <= (after or final)["end"] + 0.5, (
                w, final)
            previous = w["end"]
    # an utterance's first decode has nothing agreed yet: its words come first as tentative ones
    assert any(p["tentative"].strip() and not p["words"] for p in partials)
    tentative = [(w, p["utterance"]) for p in partials for w in words_of(p["tentative"])]
    assert sum(w in by_item.get(item, []) for w, item in tentative) >= 0.5 * len(tentative), (tentative, by_item)
    seqs = [r.event["seq"] for r in run.events if "seq" in r.event]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert run.of("done") and run.of("speaker")


@pytest.mark.slow
def test_opus_webm_stream_from_a_browser_like_encoder(server, tmp_path, two_speakers_run):
    data = encode_as(TWO_SPEAKERS, "webm", tmp_path / "two.webm").read_bytes()
    run = stream(server, data, fmt="webm", speed=0, frame_s=0.25, bytes_per_s=len(data) // 28)
    assert wer(two_speakers_run.transcript(), run.transcript()) < 0.15
    assert len({f["speaker"] for f in run.finals}) == 2


@pytest.mark.slow
def test_resume_after_the_connection_is_cut(server, two_speakers_run):
    data = pcm16(TWO_SPEAKERS)
    run = stream(server, data, speed=0, drop_at_bytes=len(data) // 2)
    assert run.reconnects == 1
    uninterrupted = two_speakers_run
    assert wer(uninterrupted.transcript(), run.transcript()) < 0.05
    # sent faster than real time, its utterances may be cut elsewhere at speaker changes (the voice windows
    # arrive later against the audio): its speakers are compared in time, not final by final
    turns = [dict(speaker=s, start=a, end=b) for s, a, b in reference_turns(TWO_SPEAKERS)]
    assert len({f["speaker"] for f in run.finals}) == 2
    assert speakers_match_reference(run.finals, turns) > 0.85, speakers_match_reference(run.finals, turns)
    assert [f["utterance"] for f in run.finals] == list(range(len(run.finals)))  # none lost, none twice


@pytest.mark.slow
def test_two_sessions_at_once_keep_their_own_speakers(server):
    async def both():
        a = StreamClient(ws_url(server), speed=0).run(pcm16(TWO_SPEAKERS))
        b = StreamClient(ws_url(server), speed=0).run(pcm16(ONE_SPEAKER))
        return await asyncio.gather(a, b)

    two, one = asyncio.run(both())
    assert len({f["speaker"] for f in two.finals}) == 2
    assert {f["speaker"] for f in one.finals} == {"SPEAKER_00"}
    assert wer(load_reference(ONE_SPEAKER)["text"], one.transcript()) < 0.25


async def exchange(url: str, sends: list, *, until: str | None = None, count: int = 1, headers: dict | None = None):
    """Open a stream, send each item (bytes, or a str text frame), and collect events until `count`
    events of type `until` (or the close). Returns (events, close code)."""
    events = []
    async with websockets.connect(url, max_size=None, additional_headers=headers) as ws:
        events.append(json.loads(await ws.recv()))
        for item in sends:
            await ws.send(item)
        try:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                events.append(event)
                if until and sum(e["type"] == until for e in events) >= count:
                    await asyncio.wait_for(ws.wait_closed(), 30)  # the server's close frame follows
                    break
        except websockets.ConnectionClosed:
            pass
        return events, ws.close_code


@pytest.mark.slow
def test_bad_input_gets_error_events_and_the_session_goes_on(server):
    speech = pcm16(ONE_SPEAKER)[: 32000 * 6]
    sends = ["{not json", json.dumps({"type": "shout"}), b"\0" * (2 << 20), speech, json.dumps({"type": "end"})]
    events, code = asyncio.run(exchange(ws_url(server), sends, until="done"))
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert codes == ["invalid_json", "unknown_event", "frame_too_large"]
    assert any(e["type"] == "final" and e["text"] for e in events) and events[-1]["type"] == "done"
    assert code == 1000


@pytest.mark.slow
@pytest.mark.parametrize("query, code, close", [
    ("?rate=5", "invalid_option", 4400),
    ("?format=mp3", "invalid_option", 4400),
    ("?session=" + "0" * 32, "session_not_found", 4404),
])
def test_refused_options_close_with_documented_codes(server, query, code, close):
    events, got = asyncio.run(exchange(ws_url(server) + query, []))
    assert events[0] == {"type": "error", "code": code, "message": events[0]["message"]} and got == close


@pytest.mark.slow
def test_undecodable_opus_stream_closes_with_its_code(server):
    events, got = asyncio.run(exchange(ws_url(server) + "?format=webm", [b"garbage" * 2000, json.dumps({"type": "end"})]))
    assert any(e.get("code") == "audio_undecodable" for e in events) and got == 4415


@pytest.mark.slow
def test_keys_limits_and_idle_timeout(tmp_path):
    env = {"API_KEYS": "k-live-0123456789", "STREAM_MAX_PER_KEY": "1", "STREAM_IDLE_S": "2", "HEARTBEAT_S": "1"}
    with live_server(tmp_path / "limits", env=env) as server:
        url = ws_url(server)
        with pytest.raises(websockets.InvalidStatus) as refused:
            asyncio.run(exchange(url, []))
        assert refused.value.response.status_code == 401

        async def two_at_once():
            key = {"X-API-Key": "k-live-0123456789"}  # in a header: a key in the URL is refused
            async with websockets.connect(url, additional_headers=key) as first:
                hello = json.loads(await first.recv())
                second = await exchange(url, [], headers=key)
                beats, events = 0, []
                try:
                    while True:  # no audio: heartbeats, then the idle timeout
                        event = json.loads(await asyncio.wait_for(first.recv(), 10))
                        events.append(event)
                        beats += event["type"] == "heartbeat"
                except websockets.ConnectionClosed:
                    pass
                return hello, second, events, first.close_code

        hello, (second, second_code), events, first_code = asyncio.run(two_at_once())
        assert hello["type"] == "session"
        assert second[0]["code"] == "too_many_streams" and second_code == 4429
        assert any(e["type"] == "heartbeat" for e in events)
        assert events[-1]["code"] == "idle_timeout" and first_code == 4408
        client = StreamClient(url, api_key="k-live-0123456789", speed=0)
        run = asyncio.run(client.run(pcm16(ONE_SPEAKER)[: 32000 * 5]))
        assert run.finals
        with pytest.raises(StreamError):
            asyncio.run(StreamClient(url, api_key="k-live-0123456789", params={"num_speakers": 99}).run(b""))


@pytest.mark.slow
def test_cli_stream_prints_finals_with_speakers_and_resumes(server):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "shared.cli.main", "stream", str(TWO_SPEAKERS), "--url", ws_url(server),
                           "--speed", "0", "--resume-test"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    finals = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert {line.split("] ")[1].split(":")[0] for line in finals} == {"SPEAKER_00", "SPEAKER_01"}
    assert wer(load_reference(TWO_SPEAKERS)["text"], " ".join(line.split(": ", 1)[1] for line in finals)) < 0.25
    assert "resumed 1 time" in done.stderr


@pytest.mark.slow
def test_live_stages_run_on_the_local_worker_pool(tmp_path):
    """`make run` serves through local_dev's worker processes: live stages travel over its wire too."""
    with live_server(tmp_path / "pool", module="local_dev", args=("serve",), startup_timeout=300) as server:
        run = stream(server, pcm16(TWO_SPEAKERS)[: 32000 * 13], speed=0)
        workers = server.client().get("/api/workers").json()
    assert "Dashwood" in run.transcript() and len({f["speaker"] for f in run.finals}) == 2
    assert sum(w["calls_done"] for w in workers["workers"]) >= len(run.finals)


# --- the engine's events as /ws/stream events (no server: the mapping itself) ---
def test_partial_carries_stable_and_tentative_words_apart():
    from shared.api.live_ws import event_json
    from shared.core.domain import Word
    from shared.live import events as ev

    stable, tentative = Word(word=" And", start=1.0, end=1.2, probability=0.9), Word(
        word=" so", start=1.25, end=1.4, probability=0.6)
    event = event_json(7, ev.PartialWords(2, (stable,), (tentative, tentative)))
    assert event == {"type": "partial", "seq": 7, "utterance": 2, "text": " And",
                     "words": [{"word": " And", "start": 1.0, "end": 1.2, "probability": 0.9}],
                     "tentative": " so so", "tentative_words": [
                         {"word": " so", "start": 1.25, "end": 1.4, "probability": 0.6}] * 2}
    # only a tentative tail (nothing agreed yet), and an empty one (the tail is gone): both well-formed
    assert event_json(8, ev.PartialWords(3, (), (tentative,)))["words"] == []
    empty = event_json(9, ev.PartialWords(3, (), ()))
    assert (empty["text"], empty["words"], empty["tentative"], empty["tentative_words"]) == ("", [], "", [])
    assert json.loads(json.dumps(event)) == event


def test_speaker_update_event():
    from shared.api.live_ws import event_json
    from shared.live import events as ev

    assert event_json(12, ev.SpeakerUpdate((1, 3), "SPEAKER_00", "SPEAKER_02")) == {
        "type": "speaker_update", "seq": 12, "utterances": [1, 3], "speaker": "SPEAKER_00", "previous": "SPEAKER_02",
        "speaker_id": None, "speaker_confidence": None}
    named = event_json(13, ev.SpeakerUpdate((4,), "Ada", "SPEAKER_01", "voice_0123", 0.81))
    assert (named["speaker"], named["previous"], named["speaker_id"], named["speaker_confidence"]) == (
        "Ada", "SPEAKER_01", "voice_0123", 0.81)


def test_cli_printer_shows_tentative_words_on_a_terminal_and_speaker_corrections(capsys):
    from types import SimpleNamespace

    from shared.cli.stream import Printer

    events = [{"type": "partial", "text": "", "tentative": " And so"},
              {"type": "partial", "text": " And", "tentative": " so am"},
              {"type": "speaker_update", "utterances": [0, 2], "speaker": "SPEAKER_00", "previous": "SPEAKER_01"},
              {"type": "final", "start": 0.0, "end": 1.5, "speaker": "SPEAKER_00", "text": "And so am I."}]
    printer = Printer(tty=False)  # a log: stable words only, one line each, nothing taken back
    for event in events:
        printer(SimpleNamespace(event=event))
    assert capsys.readouterr().out.splitlines() == [
        "… And", "(utterances 0, 2: SPEAKER_01 → SPEAKER_00)", "[00:00.0 → 00:01.5] SPEAKER_00: And so am I."]
    printer = Printer(tty=True)  # a terminal: the line rewritten, the tentative tail after the stable words
    for event in events[:2]:
        printer(SimpleNamespace(event=event))
    out = capsys.readouterr().out
    assert out.endswith("\r\033[K\033[90m… And\033[2;3m so am\033[0m")
