"""Schemas of the Files resource."""

from __future__ import annotations

import marshmallow as ma
from flask_smorest.fields import Upload

from service.api.base import CursorArgsSchema, StrictSchema, list_schema
from service.api.openai_objects import OpenAIFileSchema


class FileSchema(OpenAIFileSchema):
    sha256 = ma.fields.String(metadata={"description": "Tuneline extension: sha256 of the bytes."})
    import_id = ma.fields.String(
        metadata={"description": "Tuneline extension: the import that copied this file from a provider."}
    )


FileListSchema = list_schema(FileSchema, "FileList")


class FileUploadSchema(StrictSchema):
    file = Upload(required=True, metadata={"description": "The JSONL/JSON/CSV dataset."})
    purpose = ma.fields.String(required=True, metadata={"description": "Must be `fine-tune`."})
    # The SDK flattens ``expires_after={"anchor", "seconds"}`` into these two form fields
    # (multipart has no objects); documented the same way so the spec says what is accepted.
    expires_after_anchor = ma.fields.String(
        data_key="expires_after[anchor]",
        validate=ma.validate.OneOf(["created_at"]),
        metadata={"description": "OpenAI's expiry anchor; accepted for SDK compatibility, ignored."},
    )
    expires_after_seconds = ma.fields.Integer(
        data_key="expires_after[seconds]",
        validate=ma.validate.Range(min=3600, max=2592000),
        metadata={"description": "OpenAI's expiry (1 hour to 30 days); accepted for compatibility, ignored."},
    )


class FileListArgsSchema(CursorArgsSchema):
    purpose = ma.fields.String()
    order = ma.fields.String(
        validate=ma.validate.OneOf(["desc"]),
        metadata={"description": "Only `desc` (newest first) is supported."},
    )


class FileContentArgsSchema(StrictSchema):
    prepared_for = ma.fields.String(
        validate=ma.validate.Length(min=1, max=256),
        metadata={
            "description": "A model name: the content as prepared to train that model (fixed, "
            "converted to its format, deduplicated) instead of the bytes uploaded."
        },
    )


class FileDeletedSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("file", required=True)
    deleted = ma.fields.Boolean(required=True)


class FindingSchema(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE

    code = ma.fields.String(required=True)
    severity = ma.fields.String(required=True, metadata={"enum": ["error", "warning", "info"]})
    line = ma.fields.Integer(allow_none=True)
    index = ma.fields.Integer(allow_none=True)
    field = ma.fields.String(allow_none=True)
    message = ma.fields.String(required=True)


class FileReportSchema(ma.Schema):
    """The dataset preparation report (DESIGN §4)."""

    class Meta:
        unknown = ma.INCLUDE

    object = ma.fields.Constant("file.report", required=True)
    file_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    format = ma.fields.String()
    encoding = ma.fields.String()
    counts = ma.fields.Dict()
    findings = ma.fields.List(ma.fields.Nested(FindingSchema))
    finding_totals = ma.fields.Dict()
    fixes = ma.fields.List(ma.fields.Dict())
    tokens = ma.fields.Dict()
    estimate = ma.fields.Dict()
