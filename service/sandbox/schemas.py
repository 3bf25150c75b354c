"""Schemas of the sandbox routes: OpenAI's Files, Fine-tuning and completion shapes (faults: ``faults``)."""

from __future__ import annotations

import marshmallow as ma

from service.api.base import StrictSchema, list_schema
from service.api.jobs.schemas import WandbSchema
from service.api.openai_objects import CheckpointSchema, EventSchema, OpenAIFileSchema
from service.sandbox.faults import SandboxFaultsSchema

SandboxFileListSchema = list_schema(OpenAIFileSchema, "SandboxFileList")


class SandboxIntegrationSchema(StrictSchema):
    """OpenAI's integrations: Weights & Biases only, as OpenAI accepts them."""

    type = ma.fields.String(required=True, validate=ma.validate.OneOf(["wandb"]))
    wandb = ma.fields.Nested(WandbSchema, required=True)


class SandboxJobCreateSchema(StrictSchema):
    model = ma.fields.String(required=True)
    training_file = ma.fields.String(required=True)
    validation_file = ma.fields.String(allow_none=True)
    hyperparameters = ma.fields.Dict(keys=ma.fields.String(), allow_none=True)
    method = ma.fields.Dict(keys=ma.fields.String(), allow_none=True)
    suffix = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=64))
    seed = ma.fields.Integer(allow_none=True)
    metadata = ma.fields.Dict(
        keys=ma.fields.String(validate=ma.validate.Length(max=64)),
        values=ma.fields.String(validate=ma.validate.Length(max=512)),
        allow_none=True,
    )
    integrations = ma.fields.List(ma.fields.Nested(SandboxIntegrationSchema), allow_none=True)
    sandbox = ma.fields.Nested(SandboxFaultsSchema, allow_none=True)


class _JobErrorSchema(ma.Schema):
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    param = ma.fields.String(allow_none=True)


class SandboxJobSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("fine_tuning.job", required=True)
    created_at = ma.fields.Integer(required=True)
    error = ma.fields.Nested(_JobErrorSchema, allow_none=True)
    fine_tuned_model = ma.fields.String(allow_none=True)
    finished_at = ma.fields.Integer(allow_none=True)
    hyperparameters = ma.fields.Dict(required=True)
    model = ma.fields.String(required=True)
    organization_id = ma.fields.String(required=True, metadata={"description": "Always `sandbox`."})
    result_files = ma.fields.List(ma.fields.String(), required=True)
    seed = ma.fields.Integer(required=True)
    status = ma.fields.String(
        required=True,
        metadata={
            "enum": ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
        },
    )
    trained_tokens = ma.fields.Integer(allow_none=True)
    training_file = ma.fields.String(required=True)
    validation_file = ma.fields.String(allow_none=True)
    estimated_finish = ma.fields.Integer(allow_none=True)
    integrations = ma.fields.List(ma.fields.Dict())
    metadata = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), allow_none=True)
    method = ma.fields.Dict()
    user_provided_suffix = ma.fields.String(allow_none=True)
    terminal_at = ma.fields.Float(
        allow_none=True,
        metadata={
            "description": "Sandbox extension: when the simulated job reached its terminal status "
            "(epoch seconds, sub-second precision); null until then."
        },
    )


SandboxJobListSchema = list_schema(SandboxJobSchema, "SandboxJobList")


SandboxEventListSchema = list_schema(EventSchema, "SandboxEventList")


SandboxCheckpointListSchema = list_schema(CheckpointSchema, "SandboxCheckpointList")


class SandboxStatsSchema(ma.Schema):
    creates = ma.fields.Integer(required=True)
    creates_by_tuneline_job = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Integer(), required=True
    )
    job_reads = ma.fields.List(
        ma.fields.Float(),
        required=True,
        metadata={
            "description": "Times (unix seconds) of the latest reads a poll makes (job retrieve, "
            "unfiltered list, events, checkpoints), oldest first."
        },
    )
    calls = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Integer(),
        required=True,
        metadata={
            "description": "Reads answered, by operation: `jobs.list`, `jobs.retrieve`, `jobs.events`, "
            "`jobs.checkpoints`."
        },
    )
    slow_in_flight = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Integer(),
        required=True,
        metadata={
            "description": "Requests now held open by injected slowness, by operation "
            "(`files.create`, `files.content`, `jobs.create`, `jobs.retrieve`, `jobs.events`, "
            "`jobs.checkpoints`); operations with none are left out."
        },
    )


class _LooseSchema(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE


class _SandboxSamplingSchema(_LooseSchema):
    model = ma.fields.String(required=True)
    max_tokens = ma.fields.Integer(allow_none=True, validate=ma.validate.Range(min=1))
    stop = ma.fields.Raw(allow_none=True, metadata={"description": "A string or a list of strings."})
    stream = ma.fields.Boolean(allow_none=True)
    stream_options = ma.fields.Dict(allow_none=True)


class SandboxChatCompletionCreateSchema(_SandboxSamplingSchema):
    messages = ma.fields.List(ma.fields.Dict(), required=True, validate=ma.validate.Length(min=1))


class SandboxCompletionCreateSchema(_SandboxSamplingSchema):
    prompt = ma.fields.Raw(required=True, metadata={"description": "A string or a list of strings."})
