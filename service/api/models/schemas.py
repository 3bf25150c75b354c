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


class ModelExportArgsSchema(StrictSchema):
    format = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(["adapter", "merged", "gguf"]),
        metadata={"description": "adapter (PEFT), merged (safetensors) or gguf (llama.cpp, Ollama)."},
    )
    quantization = ma.fields.String(
        validate=ma.validate.OneOf(["f16", "q8_0"]),
        metadata={"description": "GGUF only: f16 (default) or q8_0."},
    )


class ModelExportSchema(ma.Schema):
    """An export that is being built: ask again after ``retry_after`` seconds."""

    object = ma.fields.Constant("model.export", required=True)
    model = ma.fields.String(required=True)
    format = ma.fields.String(required=True)
    quantization = ma.fields.String(allow_none=True)
    status = ma.fields.String(required=True, metadata={"description": "building"})
    retry_after = ma.fields.Integer()
