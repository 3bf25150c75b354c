"""Webhook core: Standard Webhooks signing, the SSRF guard, one-shot sending and the retry schedule."""

from service.core.webhooks.schedule import MAX_ATTEMPTS, SCHEDULE, next_attempt_at
from service.core.webhooks.sender import Attempt, Outcome, send
from service.core.webhooks.signing import (
    DEFAULT_EVENTS,
    EVENT_TYPES,
    event_payload,
    new_secret,
    sign,
)
from service.core.webhooks.ssrf import CheckedTarget, UnsafeWebhookURL, check_url

__all__ = [
    "DEFAULT_EVENTS",
    "EVENT_TYPES",
    "MAX_ATTEMPTS",
    "SCHEDULE",
    "Attempt",
    "CheckedTarget",
    "Outcome",
    "UnsafeWebhookURL",
    "check_url",
    "event_payload",
    "new_secret",
    "next_attempt_at",
    "send",
    "sign",
]
