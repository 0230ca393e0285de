"""`make bench-abuse`'s own logic (local_dev/bench/abuse*.py): when the server counts as settled, the
verdicts and the table, how answers of both live protocols are counted, and that an attack the server
turns away at once is reported as refused rather than crashing the bench. The attacks against the real
server are tests/test_hostile_*.py's; here the refusing end is a bare `websockets` server."""

from __future__ import annotations

import asyncio
import io
import json

import av
import numpy as np
import pytest
import websockets
from websockets.datastructures import Headers
from websockets.http11 import Response

from local_dev.bench.abuse import main
from local_dev.bench.abuse_attacks import ATTACKS, Attack, event_code
from local_dev.bench.abuse_payloads import webm_opus
from local_dev.bench.abuse_report import MB, Honest, Measured, counts, settled, table, verdicts
from shared.core.errors import live_code

TOO_MANY_OPENS = live_code("too_many_opens")


def test_settled_needs_a_steady_rss_and_a_quiet_cpu_over_the_window():
    steady = [(t * 0.5, 1000 * MB, t * 0.01) for t in range(12)]
    assert settled(steady)
    assert not settled(steady[:5])  # 2 s of readings: too short to tell
    assert not settled([(t * 0.5, (1000 + 10 * t) * MB, t * 0.01) for t in range(12)])  # still growing
    assert not settled([(t * 0.5, 1000 * MB, t * 0.5) for t in range(12)])  # one core busy


def test_error_codes_of_both_protocols_are_counted():
    assert event_code(json.dumps({"type": "error", "code": "idle_timeout", "message": "m"})) == "idle_timeout"
    assert event_code(json.dumps({"type": "error", "error": {"code": "invalid_json"}})) == "invalid_json"
    assert event_code(json.dumps({"type": "final", "text": "hi"})) is None
    assert event_code("{not json") == "(not JSON)"


def measured(**kw) -> Measured:
    base = dict(attack="x", rss_before=1000 * MB, rss_peak=1100 * MB, rss_after=1010 * MB, healthz=[0.01, 0.02],
                honest=Honest([1.0, 1.2, 1.1]), sent={"sessions opened": 3}, answers={"close 1000": 3}, settled_s=5)
    return Measured(**(base | kw))


def test_verdicts_against_the_targets():
    assert verdicts(measured(), solo_p50=1.0) == {"rss": True, "healthz": True, "honest": True}
    assert not verdicts(measured(rss_peak=1400 * MB), 1.0)["rss"]
    assert not verdicts(measured(healthz=[0.01, 5.0]), 1.0)["healthz"]
    assert not verdicts(measured(healthz=[]), 1.0)["healthz"]  # no answer at all is no health
    assert not verdicts(measured(honest=Honest([2.0, 2.0])), 1.0)["honest"]
    assert not verdicts(measured(honest=Honest(failure="StreamError: too_many_streams")), 1.0)["honest"]


def test_table_rows_outcomes_and_answers():
    rows = [measured(attack="none", sent={}, answers={}),
            measured(attack="trickle", rss_peak=1500 * MB),
            measured(attack="parked-churn", sent={"connections": 9}, answers={"close 4429": 9, "error a": 9}),
            measured(attack="webm-flood", problem="the server died (exit -9)")]
    assert [m.outcome for m in rows] == ["-", "ran", "refused", "the server died (exit -9)"]
    text = table(rows, Honest([1.0]))
    assert "| trickle | ran | 1000 | 500 | +10 |" in text and "**not met**" in text
    assert "| parked-churn | connections x9 | close 4429 x9, error a x9 | 0 |" in text
    assert "| none |" in text.split("the server answered")[0]  # the baseline row is in the targets' table only


def test_counts_most_frequent_first_and_bounded():
    assert counts({"a": 1, "b": 5}) == "b x5, a x1"
    assert counts({f"k{i}": i + 1 for i in range(9)}, top=2) == "k8 x9, k7 x8, 7 more"
    assert counts({}) == "-"


def test_unknown_attack_names_are_refused_before_anything_starts():
    with pytest.raises(SystemExit):
        main(["--attacks", "trickle,nope"])


def test_webm_payload_is_one_decodable_opus_stream():
    noise = (np.random.default_rng(0).standard_normal(16_000) * 0.1).astype(np.float32)
    data = webm_opus(noise, times=3)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        seconds = sum(f.samples for f in container.decode(audio=0)) / 48_000
    assert seconds == pytest.approx(3.0, abs=0.05)


async def _attack_a_refusing_server(name: str, handshake_status: int | None) -> Attack:
    async def refuse(ws) -> None:
        await ws.send(json.dumps({"type": "error", "code": TOO_MANY_OPENS.code, "message": "wait"}))
        await ws.close(TOO_MANY_OPENS.close)

    def reject(connection, request):
        if handshake_status is not None:
            return Response(handshake_status, "Refused", Headers(), b"")
        return None

    async with websockets.serve(refuse, "127.0.0.1", 0, process_request=reject) as server:
        port = server.sockets[0].getsockname()[1]
        attack = Attack(f"http://127.0.0.1:{port}", "k" * 20, seconds=1.0, concurrency=2)
        factory, _ = ATTACKS[name]
        await attack.run(factory({}), 2)
    return attack


@pytest.mark.parametrize("name", ["parked-churn", "trickle", "nested-json", "invalid-flood", "realtime-manual"])
def test_an_attack_refused_at_once_is_counted_as_refused(name):
    attack = asyncio.run(_attack_a_refusing_server(name, None))
    assert attack.answers[f"error {TOO_MANY_OPENS.code}"] >= 1
    assert attack.answers[f"close {TOO_MANY_OPENS.close}"] >= 1
    m = Measured(name, sent=dict(attack.sent), answers=dict(attack.answers))
    assert m.outcome == "refused"


def test_a_refused_handshake_is_counted():
    attack = asyncio.run(_attack_a_refusing_server("parked-churn", 403))
    assert attack.answers["handshake 403"] >= 1 and not attack.sent
