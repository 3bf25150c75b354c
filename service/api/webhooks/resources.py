"""``/v1/webhooks/default/secret`` (show, rotate) and a job's webhook delivery log."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, list_body, list_schema, principal, services
from service.core.jobs import usecases as jobs
from service.core.webhooks import delivery as webhook_delivery

blp = Blueprint("webhooks", __name__, description="Signed webhooks (Standard Webhooks).")


class SecretSchema(ma.Schema):
    object = ma.fields.Constant("webhook.secret", required=True)
    secret = ma.fields.String(required=True, metadata={"description": "whsec_… signing secret"})
    created_at = ma.fields.Integer(allow_none=True)
    rotated_at = ma.fields.Integer(allow_none=True)
    previous_valid_until = ma.fields.Integer(allow_none=True)


class AttemptSchema(ma.Schema):
    at = ma.fields.Float(required=True)
    status_code = ma.fields.Integer(allow_none=True)
    error = ma.fields.String(allow_none=True)
    latency_ms = ma.fields.Integer(allow_none=True)
    outcome = ma.fields.String(required=True)


class DeliverySchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("webhook.delivery", required=True)
    job_id = ma.fields.String(required=True)
    event_id = ma.fields.String(required=True, metadata={"description": "The webhook-id header value"})
    type = ma.fields.String(required=True)
    url = ma.fields.String(required=True)
    created_at = ma.fields.Integer(required=True)
    status = ma.fields.String(
        required=True, metadata={"enum": ["pending", "retrying", "delivered", "failed", "disabled"]}
    )
    attempts = ma.fields.List(ma.fields.Nested(AttemptSchema), required=True)
    next_attempt_at = ma.fields.Float(allow_none=True)


DeliveryListSchema = list_schema(DeliverySchema, "DeliveryList")


@blp.route("/v1/webhooks/default/secret")
class Secret(MethodView):
    @blp.response(200, SecretSchema, example=examples.WEBHOOK_SECRET)
    def get(self) -> Any:
        """Show the tenant's webhook signing secret (created on first use)."""
        svc = services()
        return webhook_delivery.get_secret(svc.store, svc.box, principal().tenant)


@blp.route("/v1/webhooks/default/secret/rotate")
class SecretRotate(MethodView):
    @blp.response(200, SecretSchema, example=examples.WEBHOOK_SECRET)
    def post(self) -> Any:
        """Rotate the signing secret; the previous one also signs for 24 hours."""
        svc = services()
        return webhook_delivery.rotate_secret(svc.store, svc.box, principal().tenant)


@blp.route("/v1/fine_tuning/jobs/<string:job_id>/webhook_deliveries")
class Deliveries(MethodView):
    @blp.response(
        200,
        DeliveryListSchema,
        example={
            "object": "list",
            "data": [examples.DELIVERY],
            "has_more": False,
            "first_id": examples.DELIVERY["id"],
            "last_id": examples.DELIVERY["id"],
        },
    )
    def get(self, job_id: str) -> Any:
        """A job's webhook deliveries: attempts, status codes, latency, next attempt."""
        job = jobs.get_job(services().store, principal(), job_id)
        return list_body(webhook_delivery.list_deliveries(services().store, job["id"]), False)


@blp.route("/v1/fine_tuning/jobs/<string:job_id>/webhook_deliveries/<string:delivery_id>/redeliver")
class Redeliver(MethodView):
    @blp.response(200, DeliverySchema, example={**examples.DELIVERY, "status": "pending"})
    def post(self, job_id: str, delivery_id: str) -> Any:
        """Queue a delivery again now (re-enables a URL disabled by 410 once it succeeds)."""
        job = jobs.get_job(services().store, principal(), job_id)
        return webhook_delivery.redeliver(services().store, principal(), job["id"], delivery_id)
