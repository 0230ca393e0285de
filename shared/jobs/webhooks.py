"""Webhooks, the Standard Webhooks way (https://www.standardwebhooks.com/).

Each event is POSTed as JSON with three headers:
    webhook-id:        msg_<hex>, the same on every attempt, so receivers can de-duplicate
    webhook-timestamp: UNIX seconds of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the signing secret>
WEBHOOK_SECRET is given as `whsec_<base64 of the key bytes>`; the `standardwebhooks` library signs. With
WEBHOOK_SECRET_PER_KEY, each API key's jobs are signed with that key's own secret, derived from
WEBHOOK_SECRET and the key's id (key_secret), so one key holder cannot verify, or forge towards a
receiver that trusts them, another key's webhooks; GET /api/webhooks/secret hands a caller its own.

Where a webhook may go is checked on every attempt, and the connection goes to the address that was
checked: PinnedTransport resolves the host once, refuses private addresses (unless
WEBHOOK_ALLOW_PRIVATE; an IPv6 address that carries an IPv4 one, NAT64, 6to4, Teredo, IPv4-mapped or
-compatible, is judged by the IPv4 address it reaches), then connects to that IP with the original Host
header and TLS server name (SNI and certificate check), so a second DNS answer (rebinding) never comes
into play. Redirects are not followed and no proxy from the environment is used.

Delivery runs off the request path: a dispatcher thread asks the job store for pending webhooks that are
due and hands them to a few sender threads. Timeouts, connection errors, 408, 429 and 5xx are retried
with exponential backoff and jitter; the pending state lives in the store, so a restart resumes it.
Each attempt is recorded with a stable summary of what went wrong (DeliveryAttempt.error: timeout,
connect_error, tls_error, http_status, ...), never an exception's text; the detail goes to the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook as StandardWebhook

from shared.core.errors import InvalidWebhookUrl
from shared.jobs.model import DeliveryAttempt, Job, job_json
from shared.jobs.store import JobStore

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# delivery attempts by outcome, exported at /metrics (shared/api/ops.py); process-wide like the senders
DELIVERIES = Counter("whospoke_webhook_deliveries", "webhook delivery attempts", ["outcome"], registry=None)
for _outcome in ("delivered", "retry", "failed"):
    DELIVERIES.labels(_outcome)  # exported from the start, at 0
MAX_URL_LENGTH = 2048


class UnresolvableHost(InvalidWebhookUrl):
    """DNS gave no answer: refused when a job is submitted, retried at delivery time."""


# --- signing ---
PER_KEY_CONTEXT = b"whospoke webhook signing key for "


def parse_secret(secret: SecretStr | str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret."""
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("WEBHOOK_SECRET must look like whsec_<base64>, e.g. whsec_" + new_secret_example()) from None
    if len(key) < 16:
        raise ValueError("WEBHOOK_SECRET is too short: use at least 16 random bytes (24 base64 characters)")
    return key


def new_secret_example() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def key_secret(master: bytes, owner: str) -> bytes:
    """The signing key of one owner's webhooks (WEBHOOK_SECRET_PER_KEY): HMAC-SHA256 of the owner (the API
    key's id, "key:<hex>"; "" when keys are off) keyed with WEBHOOK_SECRET's bytes. Stable across restarts
    and servers that share WEBHOOK_SECRET; changing WEBHOOK_SECRET changes every key's."""
    return hmac.new(master, PER_KEY_CONTEXT + owner.encode(), hashlib.sha256).digest()


def format_secret(key: bytes) -> str:
    """`whsec_<base64>`, the form Standard Webhooks libraries take a secret in."""
    return "whsec_" + base64.b64encode(key).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header value (`v1,<base64>`), computed by the standardwebhooks library."""
    return StandardWebhook(key).sign(msg_id, datetime.fromtimestamp(timestamp, timezone.utc), body.decode())


def event_body(job: Job) -> bytes:
    """The event for an ended job. Built only from stored state, so every attempt sends the same bytes."""
    data = job_json(job, exclude=frozenset({"webhook", "owns_clip"}))
    event = {"type": f"transcription.{job.status.value}", "timestamp": data["finished_at"], "data": data}
    return json.dumps(event, separators=(",", ":")).encode()


# --- where a webhook may go ---
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the IPv4 address in the last 32 bits
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: an operator's own translator
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d (deprecated; :: and ::1 are in it too)
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT's ::ffff:0:a.b.c.d (RFC 2765)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NOT_PUBLIC = "private, loopback, link-local or reserved"


def embedded_ipv4(ip: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
    (::a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::/48)
    and Teredo (2001::/32: its server and its client). `ipaddress` calls most of them global, yet a
    translator or relay on the way hands the packets to that IPv4 host, which may be a private one."""
    if ip.version == 4 or ip.is_loopback or ip.is_unspecified:  # ::1 and :: are themselves
        return []
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if ip in NAT64 or ip in IPV4_COMPATIBLE or ip in IPV4_TRANSLATED:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)]
    if ip.sixtofour:
        return [ip.sixtofour]
    if ip.teredo:
        return list(ip.teredo)
    return []


def _global(ip: Address) -> bool:
    return ip.is_global and not ip.is_multicast


def refusal(ip: Address) -> str | None:
    """Why a webhook may not go to `ip`, said as the end of "resolves to ..." (None: it may). An address
    that carries an IPv4 one is judged by that address (both, for Teredo); the local-use NAT64 prefix is
    never allowed: where it puts the IPv4 address is the operator's choice, and its translator is theirs."""
    if ip in NAT64_LOCAL_USE:
        return f"{ip}, in the local-use NAT64 prefix 64:ff9b:1::/48 (a translator inside the network)"
    inner = embedded_ipv4(ip)
    for v4 in inner:
        if not _global(v4):
            return f"{ip}, which leads to the IPv4 address {v4}, a {NOT_PUBLIC} address"
    if not inner and not _global(ip):
        return f"{ip}, a {NOT_PUBLIC} address"
    return None


def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """Refuse anything but http(s) to public addresses (every address the host resolves to), unless
    allow_private. Checked when a job is submitted; each delivery attempt checks again and connects to
    the address it checked (PinnedTransport)."""
    resolve_webhook_target(url, allow_private=allow_private)
    return url


def resolve_webhook_target(url: str, *, allow_private: bool) -> str:
    """The IP address a webhook to `url` connects to: the host resolved once, every address it has
    checked (unless allow_private); the first one is used."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"webhook_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidWebhookUrl(f"webhook_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("webhook_url must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise InvalidWebhookUrl("webhook_url has no host")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnresolvableHost(f"webhook_url host {host!r} does not resolve: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise UnresolvableHost(f"webhook_url host {host!r} does not resolve")
    if not allow_private:
        for ip in addresses:
            reason = refusal(ip)
            if reason:
                raise InvalidWebhookUrl(
                    f"webhook_url host {host!r} resolves to {reason}; set WEBHOOK_ALLOW_PRIVATE=true to allow it"
                )
    return str(addresses[0])


class PinnedTransport(httpx.BaseTransport):
    """Resolves and checks the host once per request, then connects to that address: the URL's host is
    replaced by the IP, the Host header stays the original, and TLS is told the original name (SNI and
    the certificate check). Connections are not kept alive, so one never serves another host name."""

    def __init__(self, *, allow_private: bool, **transport_kwargs):
        self.allow_private = allow_private
        transport_kwargs.setdefault("limits", httpx.Limits(max_keepalive_connections=0))
        self._inner = httpx.HTTPTransport(**transport_kwargs)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        ip = resolve_webhook_target(str(request.url), allow_private=self.allow_private)
        if ip != host:
            request.url = request.url.copy_with(host=ip)
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


# --- retries ---
def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random = random) -> float:
    """Seconds to wait after the given (1-based) failed attempt: exponential, capped, with equal jitter."""
    delay = min(max_s, base_s * 2 ** (attempt - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


def transport_error(exc: httpx.TransportError) -> str:
    """The stable summary of a failed connection (DeliveryAttempt.error): timeout, tls_error (a failed
    handshake or certificate check), connect_error, or transport_error (the answer broke off, ...)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls_error"
        cause = cause.__cause__ or cause.__context__
    return "connect_error" if isinstance(exc, httpx.ConnectError) else "transport_error"


def retry_after(response: httpx.Response, max_s: float) -> float | None:
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return min(float(value), max_s)
    return None


class WebhookSender:
    def __init__(
        self,
        store: JobStore,
        key: bytes,
        *,
        allow_private: bool = False,
        per_key: bool = False,
        max_attempts: int = 8,
        backoff_s: float = 2.0,
        backoff_max_s: float = 600.0,
        timeout_s: float = 10.0,
        workers: int = 4,
        verify: ssl.SSLContext | bool = True,
    ):
        self.store = store
        self.key = key
        self.per_key = per_key
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = min(1.0, max(0.05, backoff_s / 4))
        # trust_env=False and our own transport: a proxy from the environment would bypass the address check
        self.client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, trust_env=False,
            transport=PinnedTransport(allow_private=allow_private, verify=verify),
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        self._workers = workers
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="webhook-dispatch", daemon=True)

    @classmethod
    def from_settings(cls, store: JobStore, settings, *, workers: int = 4) -> "WebhookSender":
        """A sender signing with WEBHOOK_SECRET (per key with WEBHOOK_SECRET_PER_KEY) and retrying as the
        WEBHOOK_* settings say."""
        return cls(
            store,
            parse_secret(settings.webhook_secret),
            allow_private=settings.webhook_allow_private,
            per_key=settings.webhook_secret_per_key,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            timeout_s=settings.webhook_timeout_s,
            workers=workers,
        )

    def start(self) -> "WebhookSender":
        self._thread.start()
        return self

    def wake(self, *_: object) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self.store.due_webhooks(time.time(), limit=self._workers * 2):
                    with self._inflight_lock:
                        if job.job_id in self._inflight:
                            continue
                        self._inflight.add(job.job_id)
                    self._pool.submit(self._deliver_once, job)
            except Exception:  # noqa: BLE001 - keep delivering; the store may be briefly locked
                log.exception("webhook dispatch failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _deliver_once(self, job: Job) -> None:
        try:
            self.deliver(job)
        except Exception:  # noqa: BLE001
            log.exception("webhook delivery for job %s failed", job.job_id)
        finally:
            with self._inflight_lock:
                self._inflight.discard(job.job_id)

    def deliver(self, job: Job) -> DeliveryAttempt:
        """One attempt: POST the signed event, record the attempt and when (or whether) to retry."""
        assert job.webhook is not None
        number = len(self.store.deliveries(job.job_id)) + 1
        body = event_body(job)
        started = time.time()
        status_code, error, retryable, wait_s, detail = None, None, False, None, ""
        try:  # the transport checks the target and connects to the address it checked
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "whospoke-webhooks/0.1",
                "webhook-id": job.webhook.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.signing_key(job), job.webhook.id, timestamp, body),
            }
            response = self.client.post(job.webhook.url, content=body, headers=headers)
            status_code = response.status_code
            retryable = status_code in RETRY_STATUSES
            if status_code >= 300:
                error = "http_status"
                wait_s = retry_after(response, self.backoff_max_s) if retryable else None
        except UnresolvableHost as exc:
            error, retryable, detail = "unresolvable_host", True, exc.message
        except InvalidWebhookUrl as exc:
            error, detail = "refused_target", exc.message
        except httpx.TransportError as exc:  # timeouts, refused connections, TLS, broken answers: all retried
            error, retryable, detail = transport_error(exc), True, f"{type(exc).__name__}: {exc}"
        delivered = status_code is not None and 200 <= status_code < 300
        retry_at = None
        if not delivered and retryable and number < self.max_attempts:
            retry_at = time.time() + (wait_s or backoff_delay(number, self.backoff_s, self.backoff_max_s))
        outcome = "delivered" if delivered else ("retry" if retry_at else "failed")
        attempt = DeliveryAttempt(
            attempt=number,
            at=datetime.fromtimestamp(started, timezone.utc),
            url=job.webhook.url,
            status_code=status_code,
            error=error,
            duration_ms=round((time.time() - started) * 1000, 1),
            outcome=outcome,
        )
        self.store.add_delivery(job.job_id, attempt, retry_at)
        DELIVERIES.labels(outcome).inc()
        log.log(
            logging.INFO if delivered else logging.WARNING,
            "webhook %s for job %s, attempt %d: %s (%s)%s",
            job.webhook.id, job.job_id, number, f"HTTP {status_code}" if status_code else error, outcome,
            f": {detail}" if detail else "",
        )  # the detail stays here: a client sees the summary only
        return attempt

    def signing_key(self, job: Job) -> bytes:
        """WEBHOOK_SECRET's key, or with per_key the key of the job's owner (key_secret)."""
        return key_secret(self.key, job.owner) if self.per_key else self.key
