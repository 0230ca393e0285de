"""Webhook signing (checked against the independent `standardwebhooks` package), per-key secrets, the
address check (IPv6 forms that carry an IPv4 address included), backoff, delivery with retries to a real
receiver on 127.0.0.1 and the summaries its attempts are recorded with; per-key secrets and delivery logs
through a real server too. No models: fast (the servers' stages fail, so their jobs fail and say so)."""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import socket
import ssl
import subprocess
import time
from datetime import datetime, timezone

import httpx
import pytest
from concurrent.futures import Future

from jobs_support import WEBHOOK_SECRET, ThreadedServer, WebhookReceiver, assert_error, short_clip
from standardwebhooks import Webhook as ReferenceWebhook
from standardwebhooks import WebhookVerificationError

from shared.api.app import create_app
from shared.core.config import Settings
from shared.core.domain import Segment, TranscribeOptions, Transcript
from shared.jobs.model import Job, JobError, JobStatus, Progress, Webhook, new_job_id, new_webhook_id
from shared.jobs.sqlite_store import SqliteJobStore
from shared.pipeline.runner import Runner
from shared.jobs.webhooks import (
    InvalidWebhookUrl,
    PinnedTransport,
    UnresolvableHost,
    WebhookSender,
    backoff_delay,
    check_webhook_url,
    embedded_ipv4,
    event_body,
    format_secret,
    key_secret,
    parse_secret,
    sign,
)

KEY = parse_secret(WEBHOOK_SECRET)


def test_signature_verifies_with_standardwebhooks():
    body = b'{"type":"transcription.succeeded","data":{"job_id":"abc"}}'
    timestamp = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp), "webhook-signature": sign(KEY, "msg_1", timestamp, body)}
    assert ReferenceWebhook(WEBHOOK_SECRET).verify(body, headers) == json.loads(body)
    reference = ReferenceWebhook(WEBHOOK_SECRET).sign("msg_1", datetime.fromtimestamp(timestamp, timezone.utc), body.decode())
    assert reference == headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):  # a changed body no longer verifies
        ReferenceWebhook(WEBHOOK_SECRET).verify(body.replace(b"abc", b"abd"), headers)


def test_per_key_secrets_differ_per_owner_and_stay_the_same():
    a, b = key_secret(KEY, "key:" + "a" * 16), key_secret(KEY, "key:" + "b" * 16)
    assert a != b and len(a) == 32 and a == key_secret(KEY, "key:" + "a" * 16)
    assert key_secret(KEY, "") not in (KEY, a, b)  # keys off: the one local user's secret is derived too
    assert key_secret(parse_secret("whsec_" + "A" * 32), "key:" + "a" * 16) != a  # WEBHOOK_SECRET rotates them all
    secret = format_secret(a)
    assert secret.startswith("whsec_") and parse_secret(secret) == a  # what Standard Webhooks libraries take


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_c2hvcnQ=", ""])
def test_bad_secrets_are_refused(secret):
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        parse_secret(secret)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http:///nohost",
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://example.com:99999/hook",
    ],
)
def test_refuses_non_public_targets(url):
    with pytest.raises(InvalidWebhookUrl) as info:
        check_webhook_url(url, allow_private=False)
    assert info.value.status == 422 and info.value.code == "invalid_webhook_url"


# IPv6 addresses that lead to an IPv4 host, with a private and a public one inside (10.0.0.1, 93.184.215.14)
EMBEDDED = {
    "IPv4-mapped": ("::ffff:10.0.0.1", "::ffff:93.184.215.14"),
    "IPv4-compatible": ("::10.0.0.1", "::93.184.215.14"),
    "IPv4-translated": ("::ffff:0:10.0.0.1", "::ffff:0:93.184.215.14"),
    "NAT64": ("64:ff9b::10.0.0.1", "64:ff9b::93.184.215.14"),
    "6to4": ("2002:a00:1::1", "2002:5db8:d70e::1"),
    "Teredo (client)": ("2001:0:5db8:d70e:8000:63bf:f5ff:fffe", "2001:0:5db8:d70e:8000:63bf:a247:28f1"),
    "Teredo (server)": ("2001:0:a00:1:8000:63bf:a247:28f1", "2001:0:5db8:d70e:8000:63bf:a247:28f1"),
}


@pytest.mark.parametrize("form", EMBEDDED)
def test_ipv6_forms_are_judged_by_the_ipv4_address_inside(form):
    private, public = EMBEDDED[form]
    with pytest.raises(InvalidWebhookUrl, match=r"10\.0\.0\.1.*WEBHOOK_ALLOW_PRIVATE"):
        check_webhook_url(f"http://[{private}]/hook", allow_private=False)
    assert check_webhook_url(f"http://[{public}]/hook", allow_private=False)
    assert check_webhook_url(f"http://[{private}]/hook", allow_private=True)
    assert {str(a) for a in embedded_ipv4(ipaddress.ip_address(public))} == {"93.184.215.14"}


def test_the_local_use_nat64_prefix_is_refused_whatever_it_carries():
    """64:ff9b:1::/48 is an operator's own translator: where it puts the IPv4 address is theirs to choose."""
    for address in ("64:ff9b:1::10.0.0.1", "64:ff9b:1::93.184.215.14", "64:ff9b:1:5db8:d7:e00::"):
        with pytest.raises(InvalidWebhookUrl, match="local-use NAT64"):
            check_webhook_url(f"http://[{address}]/hook", allow_private=False)


def test_allows_public_addresses_and_private_when_told():
    assert check_webhook_url("https://93.184.215.14/hook", allow_private=False)
    assert check_webhook_url("http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/x", allow_private=False)
    assert check_webhook_url("http://127.0.0.1:8000/hook", allow_private=True)
    with pytest.raises(InvalidWebhookUrl):  # the scheme rule holds either way
        check_webhook_url("gopher://127.0.0.1/", allow_private=True)


def test_unresolvable_host():
    with pytest.raises(UnresolvableHost):
        check_webhook_url("https://no-such-host.invalid/hook", allow_private=False)


def test_backoff_grows_with_jitter_and_a_cap():
    rng = random.Random(7)
    for attempt in range(1, 12):
        full = min(60.0, 2.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 2.0, 60.0, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_delay(30, 2.0, 60.0) <= 60.0


# --- delivery to a real receiver ---
@pytest.fixture
def store(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def ended_job(store, url: str, *, ok: bool = True, owner: str = "") -> Job:
    job = store.create(
        Job(
            job_id=new_job_id(), status=JobStatus.queued, clip_id="b" * 32, options=TranscribeOptions(), owner=owner,
            created_at=datetime.now(timezone.utc), progress=Progress(total=2.0),
            webhook=Webhook(url=url, id=new_webhook_id()),
        )
    )  # fmt: skip
    store.claim_next()
    if ok:
        transcript = Transcript(segments=[Segment(speaker="SPEAKER_00", start=0, end=1, text="hi")], language="en", duration=2)
        store.finish(job.job_id, transcript)
    else:
        store.fail(job.job_id, JobError(code="internal_error", message="it broke"))
    return store.get(job.job_id)


def sender(store, **kwargs) -> WebhookSender:
    options = {"allow_private": True, "max_attempts": 4, "backoff_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 2.0}
    return WebhookSender(store, KEY, **(options | kwargs)).start()


def wait_state(store, job_id, state, timeout=20.0):
    deadline = time.monotonic() + timeout
    while store.get(job_id).webhook.state != state:
        assert time.monotonic() < deadline, store.get(job_id).webhook
        time.sleep(0.02)


def test_retries_until_accepted_with_one_webhook_id(store):
    with WebhookReceiver(plan=[503, 429, 408, 200]) as receiver:
        job = ended_job(store, receiver.url)
        s = sender(store)
        try:
            requests = receiver.wait_for(4)
            wait_state(store, job.job_id, "delivered")
        finally:
            s.close()
    assert {r["headers"]["webhook-id"] for r in requests} == {job.webhook.id}
    assert len({r["body"] for r in requests}) == 1  # the same event every time
    verifier = ReferenceWebhook(WEBHOOK_SECRET)
    for r in requests:
        event = verifier.verify(r["body"], r["headers"])
        assert abs(int(r["headers"]["webhook-timestamp"]) - r["at"]) < 5
    assert event["type"] == "transcription.succeeded" and event["data"]["job_id"] == job.job_id
    assert event["data"]["result"]["segments"][0]["text"] == "hi"
    assert event["data"]["links"]["self"] == f"/api/jobs/{job.job_id}"
    gaps = [b["at"] - a["at"] for a, b in zip(requests, requests[1:])]
    assert all(g >= 0.02 for g in gaps)  # backed off, not hammered
    attempts = store.deliveries(job.job_id)
    assert [(a.attempt, a.status_code, a.outcome) for a in attempts] == [
        (1, 503, "retry"), (2, 429, "retry"), (3, 408, "retry"), (4, 200, "delivered"),
    ]  # fmt: skip


def test_gives_up_after_max_attempts(store):
    with WebhookReceiver(plan=[500] * 10) as receiver:
        job = ended_job(store, receiver.url, ok=False)
        s = sender(store, max_attempts=3)
        try:
            wait_state(store, job.job_id, "failed")
        finally:
            s.close()
        assert len(receiver.requests) == 3
        assert receiver.events()[0]["type"] == "transcription.failed"
        assert receiver.events()[0]["data"]["error"] == {"code": "internal_error", "message": "it broke"}
    assert [a.outcome for a in store.deliveries(job.job_id)] == ["retry", "retry", "failed"]


def test_client_errors_are_not_retried(store):
    with WebhookReceiver(plan=[404]) as receiver:
        job = ended_job(store, receiver.url)
        s = sender(store)
        try:
            wait_state(store, job.job_id, "failed")
        finally:
            s.close()
        assert len(receiver.requests) == 1
    (attempt,) = store.deliveries(job.job_id)
    assert attempt.status_code == 404 and attempt.outcome == "failed" and attempt.error == "http_status"


def test_timeouts_and_refused_connections_are_retried(store):
    with WebhookReceiver(delay_s=[3.0]) as receiver:  # the first answer comes after the sender's timeout
        job = ended_job(store, receiver.url)
        s = sender(store, timeout_s=0.5)
        try:
            wait_state(store, job.job_id, "delivered")
        finally:
            s.close()
    first, second = store.deliveries(job.job_id)
    assert first.status_code is None and first.error == "timeout" and first.outcome == "retry"
    assert second.status_code == 200

    closed = ended_job(store, "http://127.0.0.1:9/nothing-listens")  # the discard port: refused
    s = sender(store, max_attempts=2)
    try:
        wait_state(store, closed.job_id, "failed")
    finally:
        s.close()
    assert [a.outcome for a in store.deliveries(closed.job_id)] == ["retry", "failed"]
    assert {a.error for a in store.deliveries(closed.job_id)} == {"connect_error"}


def test_private_target_refused_at_delivery_time(store, caplog):
    job = ended_job(store, "http://127.0.0.1:9/hook")
    s = sender(store, allow_private=False)
    try:
        wait_state(store, job.job_id, "failed")
    finally:
        s.close()
    (attempt,) = store.deliveries(job.job_id)
    assert attempt.status_code is None and attempt.error == "refused_target"  # the summary; the detail is logged
    assert any("WEBHOOK_ALLOW_PRIVATE" in r.getMessage() for r in caplog.records if r.name == "shared.jobs.webhooks")


def test_per_key_sender_signs_with_the_owners_secret(store):
    owners = ["key:" + "a" * 16, "key:" + "b" * 16]
    with WebhookReceiver() as receiver:
        jobs = [ended_job(store, receiver.url, owner=o) for o in owners]
        s = sender(store, per_key=True)
        try:
            requests = receiver.wait_for(2)
            for job in jobs:
                wait_state(store, job.job_id, "delivered")
        finally:
            s.close()
    for request in requests:
        owner = owners[[j.job_id for j in jobs].index(json.loads(request["body"])["data"]["job_id"])]
        other = owners[1 - owners.index(owner)]
        ReferenceWebhook(format_secret(key_secret(KEY, owner))).verify(request["body"], request["headers"])
        for wrong in (format_secret(key_secret(KEY, other)), WEBHOOK_SECRET):  # another key's, the shared one
            with pytest.raises(WebhookVerificationError):
                ReferenceWebhook(wrong).verify(request["body"], request["headers"])


def test_attempts_stored_as_free_text_are_shown_by_their_summary():
    """Delivery logs written before the summaries held exception text: it is never shown again."""
    from shared.jobs.model import DeliveryAttempt

    def shown(text):
        return DeliveryAttempt(attempt=1, at=datetime.now(timezone.utc), url="https://example.com", error=text,
                               duration_ms=1.0, outcome="retry").error

    assert shown("HTTP 503") == "http_status" and shown("timed out (ReadTimeout)") == "timeout"
    assert shown("ConnectError: [Errno 111] Connection refused") == "connect_error"
    assert shown("RemoteProtocolError: Server disconnected without sending a response.") == "transport_error"
    assert shown(None) is None and shown("tls_error") == "tls_error"


def test_a_pending_webhook_survives_a_restart(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with WebhookReceiver() as receiver:
        first = SqliteJobStore(path)
        job = ended_job(first, receiver.url)
        first.close()  # the process stops before any attempt
        second = SqliteJobStore(path)
        s = sender(second)
        try:
            receiver.wait_for(1)
            wait_state(second, job.job_id, "delivered")
        finally:
            s.close()
            second.close()
    assert json.loads(receiver.requests[0]["body"])["data"]["job_id"] == job.job_id


def test_event_body_is_stable():
    job = Job(
        job_id=new_job_id(), status=JobStatus.failed, clip_id="c" * 32, options=TranscribeOptions(),
        created_at=datetime.now(timezone.utc), finished_at=datetime.now(timezone.utc),
        error=JobError(code="x", message="y"), webhook=Webhook(url="https://example.com", id="msg_1"),
    )  # fmt: skip
    assert event_body(job) == event_body(Job.model_validate_json(job.model_dump_json()))
    event = json.loads(event_body(job))
    assert event["timestamp"] == event["data"]["finished_at"] and "webhook" not in event["data"]


# --- the connection goes to the address that was checked (no second resolution) ---
class Resolver:
    """DNS for one made-up name: the first answer is 127.0.0.1, any later one fails (a rebinding
    server would answer differently the second time). Every other name resolves as usual."""

    NAME = "hooks.rebind.test"

    def __init__(self, real):
        self.real = real
        self.asked = 0

    def __call__(self, host, port, *args, **kwargs):
        if host != self.NAME:
            return self.real(host, port, *args, **kwargs)
        self.asked += 1
        if self.asked > 1:
            raise socket.gaierror(socket.EAI_NONAME, "second answer refused by the test")
        return self.real("127.0.0.1", port, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch):
    r = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", r)
    return r


def test_deliveries_are_counted_by_outcome(store):
    from shared.jobs.webhooks import DELIVERIES

    def count(outcome):
        return DELIVERIES.labels(outcome)._value.get()

    before = {o: count(o) for o in ("delivered", "retry", "failed")}
    with WebhookReceiver(plan=[503, 200]) as receiver:
        job = ended_job(store, receiver.url)
        s = sender(store)
        try:
            wait_state(store, job.job_id, "delivered")
        finally:
            s.close()
    assert count("retry") - before["retry"] == 1 and count("delivered") - before["delivered"] == 1
    assert count("failed") == before["failed"]


def test_delivery_connects_to_the_checked_address_with_the_original_host(store, resolver):
    with WebhookReceiver() as receiver:
        port = receiver.httpd.server_address[1]
        job = ended_job(store, f"http://{Resolver.NAME}:{port}/hooks/whospoke")
        s = sender(store)
        try:
            (request,) = receiver.wait_for(1)
            wait_state(store, job.job_id, "delivered")
        finally:
            s.close()
    assert resolver.asked == 1  # resolved once; httpx connected to that address without asking again
    assert request["headers"]["host"] == f"{Resolver.NAME}:{port}" and request["path"] == "/hooks/whospoke"
    ReferenceWebhook(WEBHOOK_SECRET).verify(request["body"], request["headers"])


def test_a_name_resolving_to_a_private_address_is_refused_without_connecting(store, resolver):
    with WebhookReceiver() as receiver:
        port = receiver.httpd.server_address[1]
        job = ended_job(store, f"http://{Resolver.NAME}:{port}/hooks/whospoke")
        s = sender(store, allow_private=False)
        try:
            wait_state(store, job.job_id, "failed")
        finally:
            s.close()
        assert receiver.requests == []
    (attempt,) = store.deliveries(job.job_id)
    assert attempt.error == "refused_target"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for Resolver.NAME (its own CA), made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", f"/CN={Resolver.NAME}", "-addext", f"subjectAltName=DNS:{Resolver.NAME}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_delivery_tells_tls_the_original_name(store, resolver, tls_files):
    """The connection goes to the checked IP, and TLS still gets the host name: the server sees it as
    SNI and the certificate, valid for the name only (not for 127.0.0.1), verifies."""
    cert, key = tls_files
    server_names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    with WebhookReceiver() as receiver:
        receiver.httpd.socket = context.wrap_socket(receiver.httpd.socket, server_side=True)
        port = receiver.httpd.server_address[1]
        job = ended_job(store, f"https://{Resolver.NAME}:{port}/hooks/whospoke")
        s = sender(store, verify=ssl.create_default_context(cafile=str(cert)))
        try:
            (request,) = receiver.wait_for(1)
            wait_state(store, job.job_id, "delivered")
        finally:
            s.close()
    assert server_names == [Resolver.NAME] and resolver.asked == 1
    assert request["headers"]["host"] == f"{Resolver.NAME}:{port}"
    ReferenceWebhook(WEBHOOK_SECRET).verify(request["body"], request["headers"])


def test_a_certificate_that_does_not_verify_is_a_tls_error(store, tls_files, caplog):
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with WebhookReceiver() as receiver:
        receiver.httpd.socket = context.wrap_socket(receiver.httpd.socket, server_side=True)
        port = receiver.httpd.server_address[1]
        job = ended_job(store, f"https://127.0.0.1:{port}/hooks/whospoke")  # self-signed, and not for this name
        s = sender(store, max_attempts=1)
        try:
            wait_state(store, job.job_id, "failed")
        finally:
            s.close()
    (attempt,) = store.deliveries(job.job_id)
    assert attempt.error == "tls_error" and attempt.status_code is None
    assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)  # the detail: in the log


def test_pinned_transport_checks_before_it_connects():
    transport = PinnedTransport(allow_private=False)
    with httpx.Client(transport=transport) as client, pytest.raises(InvalidWebhookUrl, match="WEBHOOK_ALLOW_PRIVATE"):
        client.post("http://127.0.0.1:9/hook")


def test_webhook_secret_setting_is_secret():
    from shared.core.config import Settings

    s = Settings(_env_file=None, webhook_secret=WEBHOOK_SECRET)
    assert WEBHOOK_SECRET not in repr(s) and WEBHOOK_SECRET not in str(s.model_dump())
    assert parse_secret(s.webhook_secret) == KEY


# --- per-key secrets and delivery logs through a real server (no models: every job fails, and is told) ---
class NoModels(Runner):
    """A runner whose every stage fails: the job fails and its webhook still goes out."""

    def _submit(self, stage, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_exception(RuntimeError(f"no models in this test ({stage.value})"))
        return future


KEY_A, KEY_B = "webhook-key-a-0123456789abcdef", "webhook-key-b-0123456789abcdef"


def keyed_app(tmp_path, **settings) -> ThreadedServer:
    config = Settings(
        _env_file=None, audio_storage_path=tmp_path, api_keys=f"{KEY_A},{KEY_B}", webhook_secret=WEBHOOK_SECRET,
        webhook_allow_private=True, webhook_backoff_s=0.05, webhook_max_attempts=2, **settings,
    )  # fmt: skip
    return ThreadedServer(create_app(config, runner=NoModels()))


def submit(client, wav, webhook_url: str) -> str:
    with open(wav, "rb") as f:
        r = client.post("/api/transcriptions", files={"file": ("a.wav", f)}, data={"webhook_url": webhook_url})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def webhook_ended(client, job_id: str, state: str) -> dict:
    deadline = time.monotonic() + 30
    while (job := client.get(f"/api/jobs/{job_id}").json())["webhook"]["state"] != state:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_each_key_verifies_its_own_webhooks_only(tmp_path):
    wav = short_clip(tmp_path / "short.wav", seconds=2.0)
    with WebhookReceiver() as receiver, keyed_app(tmp_path / "storage", webhook_secret_per_key=True) as server:
        a, b = (server.client(headers={"X-API-Key": key}) for key in (KEY_A, KEY_B))
        answers = [c.get("/api/webhooks/secret") for c in (a, b)]
        assert [r.status_code for r in answers] == [200, 200] and answers[0].headers["cache-control"] == "no-store"
        secret_a, secret_b = (r.json()["secret"] for r in answers)
        assert secret_a.startswith("whsec_") and len({secret_a, secret_b, WEBHOOK_SECRET}) == 3
        assert a.get("/api/webhooks/secret").json()["secret"] == secret_a  # the same every time
        assert server.client().get("/api/webhooks/secret").status_code == 401  # no key, no secret

        job_id = submit(a, wav, receiver.url)
        (request,) = receiver.wait_for(1)
        event = ReferenceWebhook(secret_a).verify(request["body"], request["headers"])
        assert event["data"]["job_id"] == job_id and event["type"] == "transcription.failed"
        for wrong in (secret_b, WEBHOOK_SECRET):  # another key's secret, the server's own: neither verifies
            with pytest.raises(WebhookVerificationError):
                ReferenceWebhook(wrong).verify(request["body"], request["headers"])


def test_delivery_logs_show_summaries_and_the_shared_secret_is_not_handed_out(tmp_path):
    wav = short_clip(tmp_path / "short.wav", seconds=2.0)
    with keyed_app(tmp_path / "storage") as server, server.client(headers={"X-API-Key": KEY_A}) as a:
        assert_error(a.get("/api/webhooks/secret"), 403, "webhook_secret_shared")
        job_id = submit(a, wav, "http://127.0.0.1:9/nothing-listens")  # the discard port: refused
        webhook_ended(a, job_id, "failed")
        attempts = a.get(f"/api/jobs/{job_id}/deliveries").json()["attempts"]
    # a summary, never the exception's text ("[Errno 111] Connection refused" stays in the server's log)
    assert [(x["error"], x["outcome"], x["status_code"]) for x in attempts] == [
        ("connect_error", "retry", None), ("connect_error", "failed", None),
    ]  # fmt: skip


def test_no_secret_route_without_webhooks(tmp_path):
    config = Settings(_env_file=None, audio_storage_path=tmp_path, api_keys=KEY_A)
    with ThreadedServer(create_app(config, runner=NoModels())) as server:
        assert_error(server.client(headers={"X-API-Key": KEY_A}).get("/api/webhooks/secret"), 422, "webhooks_disabled")
