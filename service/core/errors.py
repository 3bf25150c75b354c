"""Domain errors, each carrying the OpenAI error envelope fields and an HTTP status."""

from __future__ import annotations

from typing import Any


class TunelineError(Exception):
    """Base of every error a client may see; the API renders it as OpenAI's envelope."""

    status = 500
    type = "server_error"
    code = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TunelineError):
    """400: the request does not match the schema."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unprocessable(TunelineError):
    """422: well-formed but refused (budget, SSRF, idempotency mismatch, file not ready)."""

    status = 422
    type = "invalid_request_error"
    code = "unprocessable"


class PayloadTooLarge(TunelineError):
    status = 413
    type = "invalid_request_error"
    code = "file_too_large"


class AuthenticationFailed(TunelineError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(TunelineError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(TunelineError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(TunelineError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class RateLimited(TunelineError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class ServiceUnavailable(TunelineError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
