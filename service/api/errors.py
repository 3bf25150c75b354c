"""The one error handler: every failure leaves in OpenAI's error envelope."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from marshmallow.exceptions import SCHEMA
from werkzeug.exceptions import HTTPException

from service.core.errors import TunelineError

log = logging.getLogger("tuneline.api")

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "file_too_large",
    415: "unsupported_media_type",
}


def _first_error(messages: Any, path: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """The first (dotted path, message) in webargs' nested error dict."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            # marshmallow files an error of a nested object as a whole (not an object) under
            # "_schema": the field is the object itself.
            return _first_error(value, path if key == SCHEMA else (*path, str(key)))
    if isinstance(messages, list) and messages:
        if all(isinstance(m, str) for m in messages):
            return (".".join(path) or None), " ".join(messages)
        return _first_error(messages[0], path)
    return (".".join(path) or None), str(messages)


def envelope(message: str, type_: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def handle_http_exception(error: HTTPException) -> Any:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    param: str | None = None
    message = error.description or error.name
    code = _HTTP_CODES.get(status, "server_error" if status >= 500 else "http_error")
    if "messages" in data:
        located = data["messages"]
        # webargs nests by location first (json, query, form, files); the location is not a param.
        if isinstance(located, dict) and len(located) == 1:
            located = next(iter(located.values()))
        param, detail = _first_error(located)
        message = f"Invalid value for '{param}': {detail}" if param else detail
        code = "invalid_value"
        if detail.startswith("Unknown field"):
            code = "unknown_parameter"
        elif detail.startswith("Missing data"):
            code = "missing_required_parameter"
            message = f"Missing required parameter: '{param}'."
    if status == 413:
        message = "Request body is larger than the upload limit (TUNELINE_MAX_UPLOAD_BYTES)."
    if status >= 500:
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = "The server had an error while processing your request."
    body = envelope(message, _HTTP_TYPES.get(status, "server_error"), code, param)
    response = jsonify(body)
    response.status_code = status
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    return response


def handle_tuneline_error(error: TunelineError) -> Any:
    response = jsonify(error.envelope())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.status >= 500:
        log.error("server error %s: %s", error.code, error.message)
    return response


def handle_unexpected(error: Exception) -> Any:
    log.exception("unhandled error on %s %s", request.method, request.path)
    response = jsonify(
        envelope(
            "The server had an error while processing your request.", "server_error", "server_error", None
        )
    )
    response.status_code = 500
    return response


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(TunelineError, handle_tuneline_error)
    app.register_error_handler(Exception, handle_unexpected)
