"""Webhook delivery use cases: tenant secrets, sending due deliveries, the log, redelivery (DESIGN §7)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from service.core.auth import Principal
from service.core.errors import NotFound
from service.core.secrets_box import SecretBox
from service.core.store import Store, keys
from service.core.store.base import dumps, loads
from service.core.webhooks import schedule, sender, signing, ssrf

log = logging.getLogger("tuneline.webhooks")

ROTATION_OVERLAP_S = 24 * 3600
DELIVERY_LEASE_S = 60.0

Sender = Callable[..., sender.Attempt]


# --- per-tenant signing secrets, stored encrypted ------------------------------------------------


def _load_secrets(store: Store, box: SecretBox, tenant: str) -> dict[str, Any]:
    raw = loads(store.r.get(keys.webhook_secret(tenant)))  # type: ignore[arg-type]
    if raw is None:
        raw = {
            "current": box.encrypt(signing.new_secret()),
            "previous": None,
            "rotated_at": None,
            "created_at": int(time.time()),
        }
        # NX: two first requests racing both end up with the same secret.
        store.r.set(keys.webhook_secret(tenant), dumps(raw), nx=True)
        raw = loads(store.r.get(keys.webhook_secret(tenant)))  # type: ignore[arg-type]
    return raw  # type: ignore[no-any-return]


def get_secret(store: Store, box: SecretBox, tenant: str) -> dict[str, Any]:
    raw = _load_secrets(store, box, tenant)
    return {
        "object": "webhook.secret",
        "secret": box.decrypt(raw["current"]),
        "created_at": raw.get("created_at"),
        "rotated_at": raw.get("rotated_at"),
        "previous_valid_until": (raw["rotated_at"] + ROTATION_OVERLAP_S) if raw.get("previous") else None,
    }


def rotate_secret(store: Store, box: SecretBox, tenant: str, now: float | None = None) -> dict[str, Any]:
    """New current secret; the old one keeps signing too for the overlap window."""
    now = time.time() if now is None else now
    raw = _load_secrets(store, box, tenant)
    raw = {
        "current": box.encrypt(signing.new_secret()),
        "previous": raw["current"],
        "rotated_at": int(now),
        "created_at": int(now),
    }
    store.r.set(keys.webhook_secret(tenant), dumps(raw))
    return get_secret(store, box, tenant)


def signing_secrets(store: Store, box: SecretBox, tenant: str, now: float) -> list[str]:
    raw = _load_secrets(store, box, tenant)
    out = [box.decrypt(raw["current"])]
    if raw.get("previous") and now < (raw.get("rotated_at") or 0) + ROTATION_OVERLAP_S:
        out.append(box.decrypt(raw["previous"]))
    return out


# --- deliveries --------------------------------------------------------------------------------


def load_delivery(store: Store, delivery_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = loads(store.r.get(keys.webhook_delivery(delivery_id)))  # type: ignore[arg-type]
    return found


def _save(store: Store, delivery: dict[str, Any], due_at: float | None) -> None:
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.webhook_delivery(delivery["id"]), dumps(delivery))
    if due_at is None:
        pipe.zrem(keys.webhook_outbox(), delivery["id"])
    else:
        pipe.zadd(keys.webhook_outbox(), {delivery["id"]: due_at})
    pipe.execute()


def claim_due(store: Store, now: float, limit: int = 200) -> list[str]:
    """Due deliveries; each is leased ahead so a worker killed mid-send is retried by a later scan."""
    due: list[str] = store.r.zrangebyscore(keys.webhook_outbox(), "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    return [
        d
        for d in due
        if store.r.zadd(keys.webhook_outbox(), {d: now + DELIVERY_LEASE_S}, xx=True, gt=True, ch=True)
    ]


def public_delivery(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: d.get(k)
        for k in (
            "id",
            "object",
            "job_id",
            "event_id",
            "type",
            "url",
            "created_at",
            "status",
            "attempts",
            "next_attempt_at",
        )
    }


def deliver(
    store: Store,
    box: SecretBox,
    delivery_id: str,
    *,
    allow_loopback: bool,
    now: float | None = None,
    rng: random.Random | None = None,
    send: Sender = sender.send,
    timeout: float = 15.0,
) -> dict[str, Any] | None:
    """Make one attempt for a pending delivery and schedule the next one; safe to run twice."""
    now = time.time() if now is None else now
    delivery = load_delivery(store, delivery_id)
    if delivery is None or delivery["status"] not in ("pending", "retrying"):
        store.r.zrem(keys.webhook_outbox(), delivery_id)
        return delivery
    tenant = delivery["tenant"]
    manual = bool(delivery.get("manual"))
    if not manual and store.r.sismember(keys.webhook_disabled(tenant), delivery["url"]):
        delivery["status"] = "disabled"
        delivery["next_attempt_at"] = None
        _save(store, delivery, None)
        return delivery
    body = signing.event_payload(
        delivery["event_id"], delivery["type"], delivery["created_at"], delivery["data"]
    )
    try:
        target = ssrf.check_url(delivery["url"], allow_loopback=allow_loopback)
    except ssrf.UnsafeWebhookURL as exc:
        attempt = sender.Attempt(outcome="retry", status_code=None, error=f"refused: {exc}", latency_ms=0)
    else:
        headers = signing.sign(signing_secrets(store, box, tenant, now), delivery["event_id"], int(now), body)
        headers["content-type"] = "application/json"
        headers["user-agent"] = "Tuneline-Webhooks/1"
        attempt = send(target, headers, body, timeout=timeout)
    delivery["attempts"].append(
        {
            "at": now,
            "status_code": attempt.status_code,
            "error": attempt.error,
            "latency_ms": attempt.latency_ms,
            "outcome": attempt.outcome,
        }
    )
    log.info(
        "webhook attempt",
        extra={
            "job_id": delivery["job_id"],
            "delivery_id": delivery_id,
            "status_code": attempt.status_code,
            "outcome": attempt.outcome,
        },
    )
    if attempt.outcome == "delivered":
        delivery["status"], delivery["next_attempt_at"], delivery["manual"] = "delivered", None, False
        delivery["delivered_at"] = now
        if manual:
            store.r.srem(keys.webhook_disabled(tenant), delivery["url"])
        _save(store, delivery, None)
        return delivery
    if attempt.outcome == "gone":
        store.r.sadd(keys.webhook_disabled(tenant), delivery["url"])
        delivery["status"], delivery["next_attempt_at"], delivery["manual"] = "disabled", None, False
        _save(store, delivery, None)
        return delivery
    made = len(delivery["attempts"]) - int(delivery.get("attempts_base", 0))
    next_at = schedule.next_attempt_at(made, now, attempt.retry_after_s, rng or random.Random())
    if next_at is None:
        delivery["status"], delivery["next_attempt_at"] = "failed", None
        _save(store, delivery, None)
    else:
        delivery["status"], delivery["next_attempt_at"] = "retrying", next_at
        _save(store, delivery, next_at)
    return delivery


def list_deliveries(store: Store, job_id: str) -> list[dict[str, Any]]:
    ids: list[str] = store.r.zrevrange(keys.job_deliveries(job_id), 0, -1)  # type: ignore[assignment]
    found = [load_delivery(store, i) for i in ids]
    return [public_delivery(d) for d in found if d is not None]


def redeliver(
    store: Store, principal: Principal, job_id: str, delivery_id: str, now: float | None = None
) -> dict[str, Any]:
    """Queue a manual attempt now; a success re-enables a URL that a 410 had disabled."""
    now = time.time() if now is None else now
    delivery = load_delivery(store, delivery_id)
    if delivery is None or delivery["job_id"] != job_id or not principal.can_read(delivery["tenant"]):
        raise NotFound(
            f"No such webhook delivery: {delivery_id}", param="delivery_id", code="delivery_not_found"
        )
    delivery.update(
        {
            "status": "pending",
            "manual": True,
            "next_attempt_at": now,
            "attempts_base": len(delivery["attempts"]),
        }
    )
    _save(store, delivery, now)
    return public_delivery(delivery)
