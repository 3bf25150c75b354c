"""Schemas of the ops routes: ``GET /v1/stats``."""

from __future__ import annotations

import marshmallow as ma

from service.api.base import StrictSchema
from service.api.jobs.schemas import JobErrorSchema

_COUNTS = {"keys": ma.fields.String(), "values": ma.fields.Integer()}


class StatsArgsSchema(StrictSchema):
    tenant = ma.fields.String(
        validate=ma.validate.Length(min=1, max=63),
        metadata={"description": "Ops keys: one tenant's figures (members may pass only their own)."},
    )


class JobCountsSchema(ma.Schema):
    total = ma.fields.Integer(required=True)
    by_status = ma.fields.Dict(required=True, **_COUNTS)
    by_stage = ma.fields.Dict(required=True, **_COUNTS)
    by_provider = ma.fields.Dict(required=True, **_COUNTS)


class OldestJobSchema(ma.Schema):
    id = ma.fields.String(required=True)
    created_at = ma.fields.Integer(required=True)
    age_s = ma.fields.Float(required=True)


class FailureSchema(ma.Schema):
    id = ma.fields.String(required=True)
    created_at = ma.fields.Integer(required=True)
    finished_at = ma.fields.Integer(allow_none=True)
    provider = ma.fields.String()
    error = ma.fields.Nested(JobErrorSchema, allow_none=True)


class StatsSchema(ma.Schema):
    object = ma.fields.Constant("stats", required=True)
    tenant = ma.fields.String(
        allow_none=True, metadata={"description": "The tenant counted; null for every tenant (ops)."}
    )
    jobs = ma.fields.Nested(JobCountsSchema, required=True)
    queues = ma.fields.Dict(
        required=True,
        metadata={"description": "Messages waiting per Celery queue (ops keys only; {} for members)."},
        **_COUNTS,
    )
    oldest_active = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Nested(OldestJobSchema),
        required=True,
        metadata={"description": "The oldest non-terminal job of each stage that has one."},
    )
    recent_failures = ma.fields.List(
        ma.fields.Nested(FailureSchema), required=True, metadata={"description": "Up to 10, newest first."}
    )
