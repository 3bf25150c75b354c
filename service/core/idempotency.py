"""Idempotency keys: replay the first answer, refuse a different body, refuse a concurrent twin."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.core.errors import Conflict, TunelineError, Unprocessable
from service.core.store import Store, keys
from service.core.store.base import dumps, loads

KEEP_S = 24 * 3600
IN_FLIGHT_S = 120


@dataclass(frozen=True)
class Response:
    status: int
    body: Any


def fingerprint(fields: dict[str, Any]) -> str:
    """A stable digest of the parsed request: multipart boundaries and key order do not matter."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run(
    store: Store,
    tenant: str,
    key: str | None,
    fields: dict[str, Any],
    produce: Callable[[], Response],
) -> tuple[Response, bool]:
    """Run ``produce`` once per (tenant, key); returns (response, replayed)."""
    if not key:
        return produce(), False
    if len(key) > 255:
        raise Unprocessable(
            "Idempotency-Key must be at most 255 characters.",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    fp = fingerprint(fields)
    redis_key = keys.idempotency(tenant, hashlib.sha256(key.encode()).hexdigest())
    claimed = store.r.set(redis_key, dumps({"fp": fp, "state": "in_flight"}), nx=True, ex=IN_FLIGHT_S)
    if not claimed:
        existing = loads(store.r.get(redis_key))  # type: ignore[arg-type]
        if existing is None:  # expired between the two calls: treat as a fresh attempt
            return run(store, tenant, key, fields, produce)
        if existing["fp"] != fp:
            raise Unprocessable(
                "This Idempotency-Key was already used with a different request body.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        if existing["state"] == "in_flight":
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry later.",
                param="Idempotency-Key",
                code="idempotency_key_in_flight",
            )
        return Response(existing["status"], existing["body"]), True
    try:
        response = produce()
    except TunelineError as exc:
        if exc.status >= 500 or exc.status == 409:
            store.r.delete(redis_key)
        else:
            store.r.set(
                redis_key,
                dumps({"fp": fp, "state": "done", "status": exc.status, "body": exc.envelope()}),
                ex=KEEP_S,
            )
        raise
    except BaseException:
        store.r.delete(redis_key)
        raise
    store.r.set(
        redis_key,
        dumps({"fp": fp, "state": "done", "status": response.status, "body": response.body}),
        ex=KEEP_S,
    )
    return response, False
