"""Schemas of the sandbox routes: OpenAI's Files, Fine-tuning and completion shapes."""

from __future__ import annotations

import marshmallow as ma

from service.api.base import StrictSchema, list_schema
from service.api.openai_objects import CheckpointSchema, EventSchema, OpenAIFileSchema
from service.core.sandbox import FAIL_STAGES

SandboxFileListSchema = list_schema(OpenAIFileSchema, "SandboxFileList")


class _ErrorSpecSchema(StrictSchema):
    code = ma.fields.String()
    message = ma.fields.String()


class _RateLimitSchema(StrictSchema):
    count = ma.fields.Integer(required=True, validate=ma.validate.Range(min=0))
    retry_after = ma.fields.Float(load_default=1.0, validate=ma.validate.Range(min=0, max=3600))


class _CreateFaultSchema(StrictSchema):
    when = ma.fields.String(load_default="after", validate=ma.validate.OneOf(["before", "after"]))
    count = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=0))


class SandboxFaultsSchema(StrictSchema):
    """Fault injection for one sandbox job (Tuneline extension; ignored by real providers)."""

    fail_at = ma.fields.String(
        validate=ma.validate.OneOf(FAIL_STAGES),
        metadata={"description": "End the job `failed` at this stage, with `error`."},
    )
    error = ma.fields.Nested(_ErrorSpecSchema, metadata={"description": "The job's `error` when it fails."})
    rate_limit = ma.fields.Nested(
        _RateLimitSchema,
        metadata={
            "description": "The next `count` reads of the job answer 429 with `Retry-After: retry_after`."
        },
    )
    server_errors = ma.fields.Integer(
        validate=ma.validate.Range(min=0),
        metadata={"description": "The next N reads of the job (after any 429s) answer 500."},
    )
    slow_ms = ma.fields.Integer(
        validate=ma.validate.Range(min=0),
        metadata={
            "description": "Every call about the job (create, retrieve, events, checkpoints, its result "
            "file's content) sleeps this long first (capped at 10 s); `_stats.slow_in_flight` counts "
            "the calls held open."
        },
    )
    result_base64 = ma.fields.Boolean(
        metadata={"description": "Serve the result file base64-wrapped, as OpenAI does."}
    )
    steps = ma.fields.Integer(
        validate=ma.validate.Range(min=1, max=1000), metadata={"description": "Training steps (default 10)."}
    )
    validating_s = ma.fields.Float(
        validate=ma.validate.Range(min=0),
        metadata={"description": "Base seconds in validating_files (default 2), times the time scale."},
    )
    queued_s = ma.fields.Float(
        validate=ma.validate.Range(min=0),
        metadata={"description": "Base seconds in queued (default 2), times the time scale."},
    )
    step_s = ma.fields.Float(
        validate=ma.validate.Range(min=0),
        metadata={"description": "Base seconds per step (default 1), times the time scale."},
    )
    create_fault = ma.fields.Nested(
        _CreateFaultSchema,
        metadata={
            "description": "The first `count` creates for this `metadata.tuneline_job_id` answer 500, "
            "`before` or `after` the job is created (after = an ambiguous failure)."
        },
    )


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
    integrations = ma.fields.List(ma.fields.Dict(), allow_none=True)
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
        metadata={"enum": ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]},
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
        metadata={"description": "Times (unix seconds) of the latest job retrieves, oldest first."},
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


class SandboxAccountFaultsSchema(StrictSchema):
    object = ma.fields.Constant("sandbox.faults", dump_only=True)
    upload_slow_ms = ma.fields.Integer(
        validate=ma.validate.Range(min=0),
        load_default=0,
        metadata={
            "description": "Every file upload sleeps this long first (capped at 10 s); 0 turns it off."
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
