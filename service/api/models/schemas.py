"""Schemas of the Models resource (OpenAI's ``model`` object plus where it came from)."""

from __future__ import annotations

import marshmallow as ma

from service.api.base import StrictSchema, list_schema


class ModelSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("model", required=True)
    created = ma.fields.Integer(required=True)
    owned_by = ma.fields.String(required=True)
    base_model = ma.fields.String()
    fine_tuning_job_id = ma.fields.String()
    provider = ma.fields.String()


ModelListSchema = list_schema(ModelSchema, "ModelList")


class ModelListArgsSchema(StrictSchema):
    after = ma.fields.String(
        metadata={"description": "Cursor: the id of the last model of the previous page."}
    )
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=100))


class ModelDeletedSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("model", required=True)
    deleted = ma.fields.Boolean(required=True)
