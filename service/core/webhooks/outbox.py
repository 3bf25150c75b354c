"""The webhook outbox: deliveries written in the same transaction as the transition (DESIGN §7)."""

from __future__ import annotations

import secrets
from typing import Any

from service.core.store import keys
from service.core.store.base import dumps
from service.core.webhooks.signing import DEFAULT_EVENTS


def wants(job: dict[str, Any], event_type: str) -> bool:
    hook = job.get("webhook") or {}
    return bool(hook.get("url")) and event_type in (hook.get("events") or DEFAULT_EVENTS)


def queue_webhook(
    pipe: Any, job: dict[str, Any], event_type: str, now: float, data: dict[str, Any]
) -> str | None:
    """Queue one delivery on ``pipe`` (inside the caller's MULTI); returns its id.

    ``data`` is the payload's job snapshot at the transition, so it describes the state that fired it.
    """
    if not wants(job, event_type):
        return None
    delivery_id = "dlv-" + secrets.token_hex(12)
    delivery = {
        "id": delivery_id,
        "object": "webhook.delivery",
        "job_id": job["id"],
        "tenant": job["tenant"],
        "event_id": "evt_" + secrets.token_hex(12),
        "type": event_type,
        "url": job["webhook"]["url"],
        "created_at": int(now),
        "status": "pending",
        "attempts": [],
        "next_attempt_at": now,
        "data": data,
    }
    pipe.set(keys.webhook_delivery(delivery_id), dumps(delivery))
    pipe.zadd(keys.job_deliveries(job["id"]), {delivery_id: now})
    pipe.zadd(keys.webhook_outbox(), {delivery_id: now})
    return delivery_id
