"""The one place where openai SDK exceptions become Tuneline's ProviderError (STYLE rule 3)."""

from __future__ import annotations

import email.utils
import time

import openai

from service.core.errors import NotFound, RateLimited, TunelineError, Unprocessable
from service.core.providers.base import ProviderError


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


def map_error(exc: Exception) -> ProviderError:
    """Classify like the SDK's retry policy: 408/409/429/5xx and connection errors retry."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            "provider request timed out", retryable=True, code="provider_timeout", ambiguous=True
        )
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            "could not reach the provider", retryable=True, code="provider_unreachable", ambiguous=True
        )
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
        return ProviderError(
            message,
            retryable=retryable,
            status=status,
            retry_after=retry_after,
            code=code or f"provider_http_{status}",
            ambiguous=status >= 500 or status == 408,
        )
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(str(exc), retryable=False, code="provider_error")
    raise exc


def api_error(exc: ProviderError, model: str) -> TunelineError:
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
