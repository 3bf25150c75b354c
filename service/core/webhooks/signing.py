"""Standard Webhooks signing: secrets, the three headers, and the event payload bytes."""

from __future__ import annotations

import base64
import json
import secrets as _random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32

EVENT_SUCCEEDED: Final = "fine_tuning.job.succeeded"
EVENT_FAILED: Final = "fine_tuning.job.failed"
EVENT_CANCELLED: Final = "fine_tuning.job.cancelled"
EVENT_RUNNING: Final = "fine_tuning.job.running"
EVENT_CHECKPOINT: Final = "fine_tuning.job.checkpoint"
EVENT_EVALUATED: Final = "fine_tuning.job.evaluated"
EVENT_PAUSED: Final = "fine_tuning.job.paused"
EVENT_RESUMED: Final = "fine_tuning.job.resumed"

EVENT_TYPES: Final[tuple[str, ...]] = (
    EVENT_SUCCEEDED,
    EVENT_FAILED,
    EVENT_CANCELLED,
    EVENT_RUNNING,
    EVENT_CHECKPOINT,
    EVENT_EVALUATED,
    EVENT_PAUSED,
    EVENT_RESUMED,
)
DEFAULT_EVENTS: Final[tuple[str, ...]] = (EVENT_SUCCEEDED, EVENT_FAILED, EVENT_CANCELLED)


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + padded base64 of 32 random bytes.

    Padded, because OpenAI's verifier decodes the secret without adding padding back.
    """
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


def is_valid_secret(secret: str) -> bool:
    """True when ``secret`` is a ``whsec_`` secret both verifiers can decode."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError:
        return False
    return len(key) >= 16


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Headers for one delivery attempt, one ``v1,`` signature per secret (rotation overlap).

    Put the current secret first; receivers accept when any listed signature matches theirs.
    """
    if not secrets:
        raise ValueError("at least one signing secret is required")
    when = datetime.fromtimestamp(int(timestamp), tz=UTC)
    # The library signs text; the body is UTF-8 JSON, so its bytes round-trip exactly.
    text = body.decode("utf-8")
    signatures: list[str] = []
    for secret in secrets:
        signature = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=text)
        if signature not in signatures:
            signatures.append(signature)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signatures),
    }


def event_payload(event_id: str, event_type: str, created_at: int, data: Mapping[str, Any]) -> bytes:
    """The delivered body ``{id, object: "event", type, created_at, data}`` as UTF-8 JSON.

    Compact and unescaped (Chinese stays readable); the same input always gives the same bytes.
    Render once and store the bytes, so every attempt signs exactly what was first rendered.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    envelope = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": int(created_at),
        "data": dict(data),
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
