"""Schemas of the Experiments resource."""

from __future__ import annotations

import marshmallow as ma

from service.api.base import CursorArgsSchema, StrictSchema, list_schema
from service.api.jobs.schemas import (
    ComputeSchema,
    EvaluationScoresSchema,
    EvaluationSummarySchema,
    HyperparametersSchema,
    JobErrorSchema,
    MethodSchema,
    PrepareSchema,
    WebhookSchema,
)
from service.sandbox.faults import SandboxFaultsSchema
from service.settings import PROVIDERS


class CandidateSchema(StrictSchema):
    provider = ma.fields.String(validate=ma.validate.OneOf(PROVIDERS))
    model = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=256))
    hyperparameters = ma.fields.Nested(HyperparametersSchema)
    method = ma.fields.Nested(MethodSchema)
    suffix = ma.fields.String(validate=ma.validate.Length(min=1, max=64))
    sandbox = ma.fields.Nested(SandboxFaultsSchema)
    compute = ma.fields.Nested(
        ComputeSchema, metadata={"description": "Local candidates: how it trains (as on a job)."}
    )
    evaluate_only = ma.fields.Boolean(
        metadata={
            "description": "Train nothing: `model` is one of your existing fine-tuned models (imported "
            "ones included), evaluated on the same held-out set through the provider that serves it."
        }
    )


class ExperimentCreateSchema(StrictSchema):
    name = ma.fields.String(validate=ma.validate.Length(max=256))
    training_file = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=128))
    validation_file = ma.fields.String(validate=ma.validate.Length(min=1, max=128))
    test_file = ma.fields.String(validate=ma.validate.Length(min=1, max=128))
    prepare = ma.fields.Nested(PrepareSchema, metadata={"description": "Shared; `split.test` is a test set."})
    seed = ma.fields.Integer(strict=True, validate=ma.validate.Range(0, 2**31 - 1))
    candidates = ma.fields.List(
        ma.fields.Nested(CandidateSchema), required=True, validate=ma.validate.Length(min=1, max=8)
    )
    metadata = ma.fields.Dict(
        keys=ma.fields.String(validate=ma.validate.Length(max=64)),
        values=ma.fields.String(validate=ma.validate.Length(max=512)),
        validate=ma.validate.Length(max=15),
    )
    webhook = ma.fields.Nested(WebhookSchema)


class CandidateRowSchema(ma.Schema):
    index = ma.fields.Integer(required=True)
    provider = ma.fields.String()
    model = ma.fields.String()
    evaluate_only = ma.fields.Boolean(metadata={"description": "An existing model, evaluated only."})
    hyperparameters = ma.fields.Dict()
    compute = ma.fields.Dict(metadata={"description": "Local candidates: the resolved compute."})
    job_id = ma.fields.String()
    status = ma.fields.String(required=True)
    stage = ma.fields.String()
    fine_tuned_model = ma.fields.String(allow_none=True)
    evaluation_status = ma.fields.String(allow_none=True)
    metrics = ma.fields.Nested(EvaluationSummarySchema, allow_none=True)
    baseline = ma.fields.Nested(
        EvaluationSummarySchema, allow_none=True, metadata={"description": "The untuned base model's scores."}
    )
    estimated_cost_usd = ma.fields.Float(allow_none=True)
    billed_tokens = ma.fields.Integer(allow_none=True)
    trained_tokens = ma.fields.Integer(allow_none=True)
    duration_s = ma.fields.Float(allow_none=True)
    error = ma.fields.Nested(JobErrorSchema, allow_none=True)


class AnswerSchema(EvaluationScoresSchema):
    job_id = ma.fields.String()
    model = ma.fields.String()


class ExampleSchema(ma.Schema):
    id = ma.fields.String(required=True)
    prompt = ma.fields.String(required=True)
    reference = ma.fields.String(required=True)
    answers = ma.fields.List(
        ma.fields.Nested(AnswerSchema, allow_none=True),
        required=True,
        metadata={"description": "One per candidate, in candidate order (null: not evaluated yet)."},
    )
    baselines = ma.fields.List(ma.fields.Nested(AnswerSchema), required=True)


class ExperimentSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("experiment", required=True)
    created_at = ma.fields.Integer(required=True)
    name = ma.fields.String(allow_none=True)
    status = ma.fields.String(required=True, metadata={"enum": ["running", "completed"]})
    training_file = ma.fields.String(required=True)
    test_file = ma.fields.String(allow_none=True)
    prepare = ma.fields.Dict(allow_none=True)
    metadata = ma.fields.Dict(allow_none=True)
    candidates = ma.fields.List(ma.fields.Nested(CandidateRowSchema), required=True)
    best_candidate = ma.fields.Integer(
        allow_none=True,
        metadata={
            "description": "Index of the candidate with the best preference_accuracy (DPO), then char_f1."
        },
    )
    examples = ma.fields.List(ma.fields.Nested(ExampleSchema))
    examples_has_more = ma.fields.Boolean()
    import_id = ma.fields.String(
        metadata={"description": "Set on an experiment re-training an imported job: the import."}
    )
    imported_job_id = ma.fields.String(metadata={"description": "The imported job it re-trains."})


ExperimentListSchema = list_schema(ExperimentSchema, "ExperimentList")


class ExperimentArgsSchema(CursorArgsSchema):
    """``after``/``limit`` page the per-example answers (ids ``ex-N``)."""
