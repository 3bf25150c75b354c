"""The sender against real local receivers: outcomes, Retry-After, no redirects, pinned address."""

from __future__ import annotations

import datetime
import email.utils
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import standardwebhooks
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.core.webhooks.sender import Attempt, classify, parse_retry_after, send
from service.core.webhooks.signing import event_payload, new_secret, sign
from service.core.webhooks.ssrf import CheckedTarget, UnsafeWebhookURL, check_url

# The receiver fixtures (tests/core/webhooks/conftest.py) return a conftest ``Receiver``.
Receiver = Any

BODY = event_payload("evt_1", "fine_tuning.job.succeeded", 1_767_225_600, {"id": "ftjob-1"})


def deliver(url: str, *, timeout: float = 5.0, secret: str | None = None) -> Attempt:
    target = check_url(url, allow_loopback=True)
    headers = sign([secret or new_secret()], "msg_1", int(time.time()), BODY)
    return send(target, headers, BODY, timeout=timeout)


def test_200_is_delivered_with_signed_headers(receiver: Receiver) -> None:
    secret = new_secret()
    attempt = deliver(receiver.url, secret=secret)
    assert attempt.outcome == "delivered"
    assert (attempt.status_code, attempt.error, attempt.retry_after_s) == (200, None, None)
    assert attempt.latency_ms >= 0
    [got] = receiver.requests
    assert got.path == "/hook"
    assert got.body == BODY
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    # What reached the wire verifies with both official receivers.
    standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1")
    assert client.webhooks.unwrap(got.body, got.headers, secret=secret).type == "fine_tuning.job.succeeded"


@pytest.mark.parametrize("status", [201, 202, 204, 299])
def test_any_2xx_is_delivered(receiver_factory: Callable[..., Receiver], status: int) -> None:
    receiver = receiver_factory(status=status, body=b"")
    assert deliver(receiver.url).outcome == "delivered"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 500, 502, 503, 504])
def test_other_failures_retry(receiver_factory: Callable[..., Receiver], status: int) -> None:
    attempt = deliver(receiver_factory(status=status).url)
    assert attempt.outcome == "retry"
    assert attempt.status_code == status
    assert attempt.error is not None and attempt.error.startswith(f"HTTP {status}")


def test_500_is_retried(receiver_factory: Callable[..., Receiver]) -> None:
    attempt = deliver(receiver_factory(status=500).url)
    assert (attempt.outcome, attempt.status_code) == ("retry", 500)


def test_410_is_gone(receiver_factory: Callable[..., Receiver]) -> None:
    attempt = deliver(receiver_factory(status=410).url)
    assert (attempt.outcome, attempt.status_code) == ("gone", 410)


def test_429_retry_after_seconds(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(status=429, headers={"Retry-After": "120"})
    attempt = deliver(receiver.url)
    assert (attempt.outcome, attempt.status_code, attempt.retry_after_s) == ("retry", 429, 120.0)


def test_503_retry_after_http_date(receiver_factory: Callable[..., Receiver]) -> None:
    when = email.utils.formatdate(time.time() + 600, usegmt=True)
    receiver = receiver_factory(status=503, headers={"Retry-After": when})
    attempt = deliver(receiver.url)
    assert attempt.outcome == "retry"
    assert attempt.retry_after_s is not None and 590 <= attempt.retry_after_s <= 601


def test_parse_retry_after() -> None:
    now = 1_767_225_600.0
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:10:00 GMT", now=now) == 600.0
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now=now) == 0.0  # in the past
    for bad in (None, "", "-5", "1.5", "soon", "Thu, 01 Jan 2026 00:10:00"):
        assert parse_retry_after(bad, now=now) is None, bad


def test_classify() -> None:
    assert [classify(s) for s in (200, 204, 301, 302, 404, 410, 429, 500)] == [
        "delivered",
        "delivered",
        "retry",
        "retry",
        "retry",
        "gone",
        "retry",
        "retry",
    ]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed(receiver_factory: Callable[..., Receiver], status: int) -> None:
    elsewhere = receiver_factory()
    redirecting = receiver_factory(status=status, headers={"Location": elsewhere.url})
    attempt = deliver(redirecting.url)
    assert attempt.outcome == "retry"
    assert attempt.status_code == status
    assert attempt.error is not None and "redirect not followed" in attempt.error
    assert len(redirecting.requests) == 1
    assert elsewhere.requests == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("private_network")
def test_connection_refused_is_retried() -> None:
    attempt = deliver(f"http://127.0.0.1:{free_port()}/hook")
    assert attempt.outcome == "retry"
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("connect error")


def test_timeout_is_retried(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(delay_s=1.0)
    started = time.perf_counter()
    attempt = deliver(receiver.url, timeout=0.2)
    assert time.perf_counter() - started < 0.9
    assert attempt.outcome == "retry"
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("timeout")


def test_large_response_body_is_capped_and_not_kept(receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory(status=500, body=b"x" * 5_000_000)
    attempt = deliver(receiver.url)
    assert attempt.outcome == "retry"
    assert "xxx" not in repr(attempt)


def test_connects_to_checked_ip_without_resolving_again(receiver: Receiver) -> None:
    """The name resolves once, in the guard; the sender dials the checked IP with the name in Host."""
    lookups: list[str] = []

    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    target = check_url(
        f"http://hooks.tuneline.invalid:{receiver.port}/hook?x=1",
        allow_loopback=True,
        resolver=resolver,
    )
    attempt = send(target, sign([new_secret()], "msg_1", int(time.time()), BODY), BODY, timeout=5)
    assert attempt.outcome == "delivered"
    assert lookups == ["hooks.tuneline.invalid"]  # .invalid never resolves for real: pinned
    [got] = receiver.requests
    assert got.headers["host"] == f"hooks.tuneline.invalid:{receiver.port}"
    assert got.path == "/hook?x=1"


def test_https_sends_sni_of_the_name_not_the_ip() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(204)

    target = CheckedTarget(
        url="https://hooks.example.com/h",
        scheme="https",
        host="hooks.example.com",
        port=443,
        ip="93.184.215.14",
        target="/h",
    )
    attempt = send(target, {}, BODY, transport=httpx2.MockTransport(handler))
    assert attempt.outcome == "delivered"
    [request] = seen
    assert str(request.url) == "https://93.184.215.14/h"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


def test_loopback_not_allowed_never_connects(receiver: Receiver) -> None:
    for url in (
        receiver.url,
        f"http://localhost:{receiver.port}/hook",
        f"http://2130706433:{receiver.port}/hook",
        f"http://0x7f.1:{receiver.port}/hook",
        f"http://[::ffff:127.0.0.1]:{receiver.port}/hook",
    ):
        with pytest.raises(UnsafeWebhookURL):
            target = check_url(url, allow_loopback=False)
            send(target, {}, BODY, timeout=1)
    assert receiver.requests == []


def self_signed(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for ``name`` and a client context that trusts only that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_pem, key_pem)
    client = ssl.create_default_context(cafile=str(cert_pem))
    return server, client


def test_https_to_pinned_ip_verifies_the_certificate_for_the_name(
    receiver_factory: Callable[..., Receiver], tmp_path: Path
) -> None:
    """TLS goes to 127.0.0.1 but SNI and verification use the URL's name."""
    server_tls, client_tls = self_signed(tmp_path, "hooks.tuneline.test")
    receiver = receiver_factory(tls=server_tls)

    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    target = check_url(
        f"https://hooks.tuneline.test:{receiver.port}/hook", allow_loopback=True, resolver=resolver
    )
    headers = sign([new_secret()], "msg_1", int(time.time()), BODY)
    attempt = send(target, headers, BODY, transport=httpx2.HTTPTransport(verify=client_tls))
    assert attempt.outcome == "delivered", attempt.error
    assert receiver.requests[0].headers["host"] == f"hooks.tuneline.test:{receiver.port}"

    # The same server under another name fails verification: the pin does not skip TLS checks.
    other = check_url(
        f"https://other.tuneline.test:{receiver.port}/hook", allow_loopback=True, resolver=resolver
    )
    attempt = send(other, headers, BODY, transport=httpx2.HTTPTransport(verify=client_tls))
    assert attempt.outcome == "retry"
    assert attempt.error is not None and "certificate" in attempt.error.lower()
    assert len(receiver.requests) == 1
