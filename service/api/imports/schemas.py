"""Schemas of the Imports resource."""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma

from service.api.base import StrictSchema, list_schema
from service.api.experiments.schemas import CandidateSchema
from service.api.jobs.schemas import SplitSchema
from service.core.imports.retrain import DEFAULT_SPLIT, TEST_SETS
from service.core.imports.usecases import PROGRESS_FIELDS, SOURCES
from service.fields import StrictNumber


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


class RetrainCreateSchema(StrictSchema):
    candidates = ma.fields.List(
        ma.fields.Nested(CandidateSchema),
        required=True,
        validate=ma.validate.Length(min=1, max=7),
        metadata={
            "description": "What to train on each imported job's data, as experiments take them "
            '(e.g. `{"provider": "local", "model": "smollm2-135m"}`).'
        },
    )
    split = ma.fields.Nested(
        SplitSchema,
        metadata={
            "description": f"The held-out split of the training file (default {DEFAULT_SPLIT}); a job "
            "imported with a validation file is tested on that file instead (`test` is then unused)."
        },
    )
    include_original = ma.fields.Boolean(
        load_default=True,
        metadata={
            "description": "Evaluate each job's original fine-tuned model beside the candidates (an "
            "evaluate-only candidate, last in the table; it needs the account's provider configured)."
        },
    )
    jobs = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=256)),
        validate=ma.validate.Length(min=1, max=1000),
        metadata={
            "description": "Only these imported jobs (Tuneline or provider job ids); default: every "
            "succeeded job with a training file (the others are listed in `skipped`)."
        },
    )


class RetrainedJobSchema(ma.Schema):
    job_id = ma.fields.String(required=True, metadata={"description": "The imported job."})
    provider_job_id = ma.fields.String(allow_none=True)
    fine_tuned_model = ma.fields.String(allow_none=True, metadata={"description": "The original model."})
    test_set = ma.fields.String(
        required=True,
        metadata={
            "enum": list(TEST_SETS),
            "description": "`validation_file`: the job's validation file, unseen by every model; "
            "`split`: held out from the training file, which the original model trained on.",
        },
    )
    experiment_id = ma.fields.String(required=True)


class RetrainSkippedSchema(ma.Schema):
    job_id = ma.fields.String(required=True)
    provider_job_id = ma.fields.String(allow_none=True)
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)


class RetrainListsSchema(ma.Schema):
    data = ma.fields.List(ma.fields.Nested(RetrainedJobSchema), required=True)
    skipped = ma.fields.List(
        ma.fields.Nested(RetrainSkippedSchema),
        required=True,
        metadata={"description": "Imported jobs not re-trained, and why."},
    )


class RetrainSchema(RetrainListsSchema):
    object = ma.fields.Constant("import.retrain", required=True)
    import_id = ma.fields.String(required=True)


class DistillCreateSchema(StrictSchema):
    max_cost_usd = StrictNumber(
        required=True,
        validate=ma.validate.Range(min=0, min_inclusive=False),
        metadata={
            "description": "The most the original models' answers may cost (their usage prices): "
            "an upper estimate over it is refused, and the run stops before passing it."
        },
    )
    jobs = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=256)),
        validate=ma.validate.Length(min=1, max=1000),
        metadata={"description": "Only these imported jobs (Tuneline or provider job ids)."},
    )


class DistilledJobSchema(ma.Schema):
    job_id = ma.fields.String(required=True)
    provider_job_id = ma.fields.String(allow_none=True)
    fine_tuned_model = ma.fields.String(allow_none=True, metadata={"description": "The model answering."})
    prompts = ma.fields.Integer(required=True)
    answered = ma.fields.Integer(required=True)
    errors = ma.fields.Integer(required=True)
    file_id = ma.fields.String(
        allow_none=True, metadata={"description": "The new training file (prepared like any other)."}
    )
    complete = ma.fields.Boolean(
        allow_none=True, metadata={"description": "False when the run stopped before its last prompt."}
    )


class DistillStateSchema(ma.Schema):
    status = ma.fields.String(
        required=True, metadata={"enum": ["queued", "running", "succeeded", "stopped", "failed"]}
    )
    max_cost_usd = ma.fields.Float(required=True)
    estimated_cost_usd = ma.fields.Float(required=True, metadata={"description": "The upper estimate."})
    spent_usd = ma.fields.Float(required=True, metadata={"description": "From each answer's usage."})
    jobs = ma.fields.List(ma.fields.Nested(DistilledJobSchema), required=True)
    skipped = ma.fields.List(ma.fields.Nested(RetrainSkippedSchema), required=True)
    error = ma.fields.Nested(ImportErrorSchema, allow_none=True)


class DistillSchema(DistillStateSchema):
    object = ma.fields.Constant("import.distill", required=True)
    import_id = ma.fields.String(required=True)


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
    retrain = ma.fields.Nested(
        RetrainListsSchema, allow_none=True, metadata={"description": "Its re-training, once asked for."}
    )
    distill = ma.fields.Nested(
        DistillStateSchema, allow_none=True, metadata={"description": "Its distillation, once asked for."}
    )


ImportListSchema = list_schema(ImportSchema, "ImportList")
