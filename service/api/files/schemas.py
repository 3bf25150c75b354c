"""Schemas of the Files resource."""

from __future__ import annotations

import marshmallow as ma
from flask_smorest.fields import Upload

from service.api.base import CursorArgsSchema, StrictSchema, list_schema


class FileSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("file", required=True)
    bytes = ma.fields.Integer(required=True)
    created_at = ma.fields.Integer(required=True)
    filename = ma.fields.String(required=True)
    purpose = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": ["uploaded", "processed", "error"]})
    status_details = ma.fields.String(allow_none=True)
    expires_at = ma.fields.Integer(allow_none=True)
    sha256 = ma.fields.String(metadata={"description": "Tuneline extension: sha256 of the bytes."})


FileListSchema = list_schema(FileSchema, "FileList")


class FileUploadFilesSchema(StrictSchema):
    file = Upload(required=True, metadata={"description": "The JSONL/JSON/CSV dataset."})


class FileUploadFormSchema(StrictSchema):
    purpose = ma.fields.String(required=True, metadata={"description": "Must be `fine-tune`."})


class FileListArgsSchema(CursorArgsSchema):
    purpose = ma.fields.String()
    order = ma.fields.String(validate=ma.validate.OneOf(["desc"]),
                             metadata={"description": "Only `desc` (newest first) is supported."})


class FileDeletedSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("file", required=True)
    deleted = ma.fields.Boolean(required=True)
