"""Schemas of the Imports resource."""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma

from service.api.base import StrictSchema, list_schema
from service.core.imports.usecases import PROGRESS_FIELDS, SOURCES


class Since(ma.fields.Field):
    """Unix seconds, or an ISO 8601 date or date-time (UTC when it names no zone)."""

    def __init__(self, **kwargs: Any) -> None:
        doc = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "date-time"}]}
        super().__init__(metadata={**doc, "description": kwargs.pop("description", "")}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ma.ValidationError("Must be a Unix time (seconds) of 0 or later.")
            return value
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ma.ValidationError("Must be Unix seconds or an ISO 8601 date (2026-06-01).") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return int(parsed.timestamp())
        raise ma.ValidationError("Must be Unix seconds or an ISO 8601 date (2026-06-01).")


class ImportCreateSchema(StrictSchema):
    source = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(SOURCES),
        metadata={"description": "The kind of account: `openai` (or any API of its shape) or `azure`."},
    )
    api_key = ma.fields.String(
        validate=ma.validate.Length(min=1, max=1024),
        load_only=True,
        metadata={
            "description": "The account's key; default: the configured provider's. Stored encrypted "
            "while the import runs and deleted when it ends; never answered."
        },
    )
    base_url = ma.fields.String(
        validate=ma.validate.Length(min=1, max=2048),
        metadata={
            "description": "The account's API URL (the Azure endpoint for `azure`); default: the "
            "configured one. Other URLs must pass the same checks as webhook URLs."
        },
    )
    since = Since(description="Only jobs created at or after this time.")
    jobs = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=256)),
        validate=ma.validate.Length(min=1, max=1000),
        metadata={"description": "Only these provider job ids (default: every job of the account)."},
    )


ImportProgressSchema = ma.Schema.from_dict(
    {name: ma.fields.Integer(required=True) for name in PROGRESS_FIELDS}, name="ImportProgress"
)


class ImportSkippedSchema(ma.Schema):
    job = ma.fields.String(allow_none=True, metadata={"description": "The provider job id."})
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)


class ImportErrorSchema(ma.Schema):
    code = ma.fields.String(allow_none=True)
    message = ma.fields.String(allow_none=True)


class ImportSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"description": "`imp-…`"})
    object = ma.fields.Constant("import", required=True)
    source = ma.fields.String(required=True)
    base_url = ma.fields.String(allow_none=True)
    since = ma.fields.Integer(allow_none=True)
    jobs = ma.fields.List(ma.fields.String(), allow_none=True)
    status = ma.fields.String(
        required=True, metadata={"description": "`queued`, `running`, `succeeded` or `failed`."}
    )
    progress = ma.fields.Nested(ImportProgressSchema, required=True)
    skipped = ma.fields.List(
        ma.fields.Nested(ImportSkippedSchema),
        metadata={"description": "What was not copied, and why (the first 500)."},
    )
    error = ma.fields.Nested(ImportErrorSchema, allow_none=True, metadata={"description": "Why it failed."})
    created_at = ma.fields.Integer(required=True)
    updated_at = ma.fields.Integer()
    finished_at = ma.fields.Integer(allow_none=True)
    tenant = ma.fields.String()


ImportListSchema = list_schema(ImportSchema, "ImportList")
