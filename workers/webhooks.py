"""Webhook tasks: the outbox scan (beat) and one delivery attempt per task."""

from __future__ import annotations

import time

from celery import Celery

from service import taskqueue
from service.core.secrets_box import box_for
from service.core.webhooks import delivery as webhook_delivery
from workers.context import context


def register(app: Celery) -> None:
    @app.task(name=taskqueue.WEBHOOK_SCAN)
    def scan() -> None:
        ctx = context()
        for delivery_id in webhook_delivery.claim_due(ctx.store, time.time()):
            ctx.dispatcher.enqueue(taskqueue.WEBHOOK_DELIVER, delivery_id)

    @app.task(name=taskqueue.WEBHOOK_DELIVER, soft_time_limit=60, time_limit=90)
    def deliver(delivery_id: str) -> None:
        ctx = context()
        webhook_delivery.deliver(
            ctx.store,
            box_for(ctx.settings.secret_key, ctx.settings.env),
            delivery_id,
            allow_loopback=ctx.settings.webhook_allow_loopback,
        )
