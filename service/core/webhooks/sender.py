"""One webhook POST to a checked address: no re-resolution, no redirects, classified outcome."""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import httpx2

from service.core.webhooks.ssrf import CheckedTarget

Outcome = Literal["delivered", "retry", "gone"]

DEFAULT_TIMEOUT_S: Final = 15.0
MAX_RESPONSE_BYTES: Final = 4096
USER_AGENT: Final = "Tuneline-Webhooks/1.0"
_MAX_ERROR_CHARS: Final = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt did. Response bodies are never kept."""

    outcome: Outcome
    status_code: int | None
    error: str | None
    latency_ms: int
    retry_after_s: float | None = None


def classify(status_code: int) -> Outcome:
    """Standard Webhooks / Svix: 2xx delivered, 410 disables the URL, anything else retries.

    Redirects are not followed (the target was checked, its redirect was not), so a 3xx is a
    failed attempt too.
    """
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "gone"
    return "retry"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is treated as such
        return None
    return max(0.0, when.timestamp() - now)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx2.TimeoutException):
        kind = "timeout"
    elif isinstance(exc, httpx2.ConnectError):
        kind = "connect error"
    elif isinstance(exc, httpx2.RemoteProtocolError):
        kind = "protocol error"
    else:
        kind = "network error"
    detail = str(exc) or type(exc).__name__
    return f"{kind}: {detail}"[:_MAX_ERROR_CHARS]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, built on first use: building one loads the CA
    bundle (about 20 ms of CPU, which was most of a delivery's cost). It holds no per-host or
    per-connection state (SNI and hostname checks are per connection), and pools stay per call."""
    return httpx2.create_ssl_context(trust_env=False)


def send(
    target: CheckedTarget,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    transport: httpx2.BaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> Attempt:
    """POST ``body`` to ``target``, connecting to ``target.ip`` and never re-resolving the host.

    The URL is rewritten to the checked IP; the original host goes in ``Host`` and, for https,
    in SNI and certificate verification. ``transport`` is for tests (``httpx2.MockTransport``);
    by default each call uses a fresh pool, so a TLS connection made for one host name is never
    reused for another name on the same IP.
    """
    request_headers = {
        "content-type": "application/json; charset=utf-8",
        "user-agent": USER_AGENT,
        **{k.lower(): v for k, v in headers.items()},
        "host": target.host_header(),
    }
    extensions: dict[str, object] = {}
    if target.scheme == "https" and not target.host_is_ip:
        extensions["sni_hostname"] = target.host
    started = time.perf_counter()
    deadline = started + timeout

    def elapsed_ms() -> int:
        return int((time.perf_counter() - started) * 1000)

    owned = transport is None
    active_transport = transport or httpx2.HTTPTransport(trust_env=False, retries=0, verify=_tls_context())
    try:
        with httpx2.Client(
            transport=active_transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx2.Timeout(timeout),
        ) as client:
            request = client.build_request(
                "POST",
                target.connect_url(),
                headers=request_headers,
                content=body,
                extensions=extensions,
            )
            response = client.send(request, stream=True, follow_redirects=False)
            try:
                # Drain a little so the receiver can finish its write; never keep or log it.
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES or time.perf_counter() > deadline:
                        break
            except (httpx2.HTTPError, httpx2.StreamError):
                pass  # the status line arrived; a broken body does not change the verdict
            finally:
                response.close()
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        return Attempt(outcome="retry", status_code=None, error=_describe(exc), latency_ms=elapsed_ms())
    finally:
        if owned:
            active_transport.close()

    status = response.status_code
    outcome = classify(status)
    error: str | None = None
    if outcome != "delivered":
        reason = response.reason_phrase or ""
        error = f"HTTP {status} {reason}".strip()
        if 300 <= status < 400:
            error += " (redirect not followed)"
    retry_after = None
    if outcome == "retry":
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=clock())
    return Attempt(
        outcome=outcome,
        status_code=status,
        error=error,
        latency_ms=elapsed_ms(),
        retry_after_s=retry_after,
    )
