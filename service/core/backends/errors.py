"""The one place where openai SDK exceptions become classified BackendErrors (STYLE rule 3)."""

from __future__ import annotations

import email.utils
import time

import openai

from service.core.backends.base import BackendError, ErrorKind
from service.core.errors import Conflict, NotFound, RateLimited, TunelineError, Unprocessable


def retry_after_seconds(headers: object) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (number or HTTP date), like the SDK does."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = get(name)
        if value is None:
            continue
        try:
            return max(float(value) / divisor, 0.0)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(float(email.utils.mktime_tz(parsed) - time.time()), 0.0)
    return None


def map_error(exc: Exception) -> BackendError:
    """Classify like the SDK's retry policy: 408/409/429/5xx and connection errors retry.

    A timeout, a lost connection, a 408 or a 5xx may have reached the provider: ambiguous.
    """
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return BackendError("provider request timed out", kind="ambiguous", code="provider_timeout")
    if isinstance(exc, openai.APIConnectionError):
        return BackendError("could not reach the provider", kind="ambiguous", code="provider_unreachable")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") if isinstance(body.get("code"), str) else None
        message = str(body.get("message") or exc.message)
        retry_after = retry_after_seconds(exc.response.headers)
        should_retry = exc.response.headers.get("x-should-retry")
        retryable = status in (408, 409, 429) or status >= 500
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        kind: ErrorKind = "permanent"
        if retryable:
            kind = "ambiguous" if status >= 500 or status == 408 else "transient"
        return BackendError(
            message, kind=kind, status=status, retry_after=retry_after, code=code or f"provider_http_{status}"
        )
    if isinstance(exc, openai.OpenAIError):
        return BackendError(str(exc), kind="permanent", code="provider_error")
    raise exc


def control_error(exc: BackendError, what: str, job_id: str) -> TunelineError:
    """What a caller sees when the provider refused or failed to pause or resume a job."""
    message = f"The provider could not {what} job {job_id}: {exc.message}"
    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
        return Conflict(message, code=f"{what}_refused", headers={"x-should-retry": "false"})
    return TunelineError(message, code="provider_unavailable", status=502)


def api_error(exc: BackendError, model: str) -> TunelineError:
    """What a caller of Tuneline's completions sees when the provider refused or failed."""
    message = f"The provider failed to answer for {model}: {exc.message}"
    if exc.status == 404:
        return NotFound(
            f"The model '{model}' is no longer available at its provider.",
            param="model",
            code="model_not_found",
        )
    if exc.status == 429:
        retry = {"Retry-After": f"{exc.retry_after:g}"} if exc.retry_after is not None else {}
        return RateLimited(message, code="provider_rate_limited", headers=retry)
    if exc.status is not None and 400 <= exc.status < 500:
        return Unprocessable(message, code=exc.code or "provider_rejected")
    return TunelineError(message, code="provider_unavailable", status=502)
