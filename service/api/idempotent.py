"""Idempotency-Key handling for create routes, over the core idempotency store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import jsonify, request

from service.api.base import principal, services
from service.core import idempotency


def idempotent(fields: dict[str, Any], produce: Callable[[], dict[str, Any]], status: int = 200) -> Any:
    """Run ``produce`` under the request's Idempotency-Key (if any) and answer its result."""
    key = request.headers.get("Idempotency-Key")
    response, replayed = idempotency.run(
        services().store,
        principal().tenant,
        key,
        fields,
        lambda: idempotency.Response(status, produce()),
    )
    out = jsonify(response.body)
    out.status_code = response.status
    if replayed:
        out.headers["Idempotent-Replayed"] = "true"
    return out
