"""Schemas of the Fine-tuning jobs resource."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from service.api.base import CursorArgsSchema, MetadataFilterArgsSchema, StrictSchema, list_schema
from service.api.openai_objects import CheckpointSchema, EventSchema, MetricRowSchema
from service.core.jobs.integrations import TYPES as INTEGRATION_TYPES
from service.core.jobs.states import STATUSES
from service.core.store.train_queue import PRIORITY_MAX, PRIORITY_MIN
from service.core.webhooks.signing import EVENT_TYPES
from service.fields import StrictInt, StrictNumber
from service.sandbox.faults import SandboxFaultsSchema
from service.settings import PROVIDERS, TRAIN_EXECUTORS

_AUTO = "auto"


class AutoOr(ma.fields.Field):
    """``"auto"`` or a number in range (OpenAI's hyperparameter convention); no silent coercion."""

    def __init__(self, kind: type, low: float, high: float, **kwargs: Any) -> None:
        self.kind, self.low, self.high = kind, low, high
        doc = {
            "oneOf": [
                {"type": "string", "enum": ["auto"]},
                {"type": "integer" if kind is int else "number", "minimum": low, "maximum": high},
            ]
        }
        super().__init__(metadata=doc, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value == _AUTO:
            return value
        ok_type = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            raise ma.ValidationError(f"Must be 'auto' or a{'n integer' if self.kind is int else ' number'}.")
        if not self.low <= value <= self.high:
            raise ma.ValidationError(f"Must be between {self.low} and {self.high}.")
        return value


class HyperparametersSchema(StrictSchema):
    n_epochs = AutoOr(int, 1, 50)
    batch_size = AutoOr(int, 1, 256)
    learning_rate_multiplier = AutoOr(float, 0.0001, 10.0)
    beta = AutoOr(float, 0.0001, 2.0)
    # Local-trainer knobs (DESIGN §9), accepted beside OpenAI's.
    lora_rank = StrictInt(validate=ma.validate.Range(1, 1024))
    lora_alpha = StrictInt(validate=ma.validate.Range(1, 4096))
    lora_dropout = StrictNumber(validate=ma.validate.Range(0.0, 0.9))
    max_seq_length = StrictInt(validate=ma.validate.Range(16, 131072))
    learning_rate = StrictNumber(validate=ma.validate.Range(1e-8, 1.0))
    checkpoint_every = StrictInt(validate=ma.validate.Range(1, 1_000_000))
    training_type = ma.fields.String(
        validate=ma.validate.OneOf(["lora", "full"]),
        metadata={"description": "Local trainer: LoRA adapter (default) or full fine-tuning."},
    )


class MethodDetailSchema(StrictSchema):
    hyperparameters = ma.fields.Nested(HyperparametersSchema)


class ReinforcementHyperparametersSchema(HyperparametersSchema):
    """OpenAI's reinforcement hyperparameters, and the local trainer's GRPO knobs beside them."""

    compute_multiplier = AutoOr(float, 0.0001, 10.0)
    eval_interval = AutoOr(int, 1, 1_000_000)
    eval_samples = AutoOr(int, 1, 64)
    reasoning_effort = ma.fields.String(validate=ma.validate.OneOf(["default", "low", "medium", "high"]))
    # Local trainer: GRPO's KL coefficient (0: no reference model) and the longest sampled answer.
    beta = AutoOr(float, 0.0, 2.0)
    max_completion_length = StrictInt(validate=ma.validate.Range(1, 32768))


class ReinforcementSchema(StrictSchema):
    grader = ma.fields.Dict(
        required=True,
        metadata={
            "description": "OpenAI's grader JSON (string_check, text_similarity, python, score_model, "
            "multi): the reward. Check it first with /v1/fine_tuning/alpha/graders/validate."
        },
    )
    hyperparameters = ma.fields.Nested(ReinforcementHyperparametersSchema)


class MethodSchema(StrictSchema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(["supervised", "dpo", "reinforcement"]))
    supervised = ma.fields.Nested(MethodDetailSchema)
    dpo = ma.fields.Nested(MethodDetailSchema)
    reinforcement = ma.fields.Nested(ReinforcementSchema)

    @ma.validates_schema
    def _reinforcement_has_a_grader(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") == "reinforcement" and "reinforcement" not in data:
            raise ma.ValidationError({"grader": ["Missing data for required field."]}, "reinforcement")


class WebhookSchema(StrictSchema):
    url = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=2048))
    events = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(EVENT_TYPES)), validate=ma.validate.Length(min=1)
    )


class SplitSchema(StrictSchema):
    validation = StrictNumber(validate=ma.validate.Range(0.0, 0.5))
    test = StrictNumber(validate=ma.validate.Range(0.0, 0.5))
    seed = StrictInt(validate=ma.validate.Range(0, 2**31 - 1))


class PrepareSchema(StrictSchema):
    system_prompt = ma.fields.String(validate=ma.validate.Length(max=4000))
    skip_invalid_lines = ma.fields.Boolean()
    dedupe = ma.fields.Boolean()
    split = ma.fields.Nested(SplitSchema)


class WandbSchema(StrictSchema):
    """OpenAI's Weights & Biases integration."""

    project = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=128))
    name = ma.fields.String(
        allow_none=True,
        validate=ma.validate.Length(min=1, max=128),
        metadata={"description": "The run's display name; default: the job id."},
    )
    entity = ma.fields.String(allow_none=True, validate=ma.validate.Length(min=1, max=128))
    tags = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=64)), validate=ma.validate.Length(max=20)
    )


class MlflowSchema(StrictSchema):
    """Tuneline extension: an MLflow run on the local trainer (TUNELINE_MLFLOW_TRACKING_URI)."""

    experiment_name = ma.fields.String(
        allow_none=True,
        validate=ma.validate.Length(min=1, max=256),
        metadata={"description": "Default: tuneline."},
    )
    run_name = ma.fields.String(
        allow_none=True,
        validate=ma.validate.Length(min=1, max=256),
        metadata={"description": "Default: the job id."},
    )


class IntegrationSchema(StrictSchema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(INTEGRATION_TYPES))
    wandb = ma.fields.Nested(WandbSchema)
    mlflow = ma.fields.Nested(MlflowSchema)

    @ma.validates_schema
    def _settings_of_its_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        """The object named by ``type`` is present (mlflow's may be left out), and no other."""
        kind = data.get("type")
        for other in INTEGRATION_TYPES:
            if other != kind and other in data:
                raise ma.ValidationError(f"Not allowed when type is {kind!r}.", field_name=other)
        if kind == "wandb" and "wandb" not in data:
            raise ma.ValidationError("Missing data for required field.", field_name="wandb")


class ComputeSchema(StrictSchema):
    executor = ma.fields.String(
        validate=ma.validate.OneOf(TRAIN_EXECUTORS),
        metadata={
            "description": "process: one child process on a train worker's device; ray: a Ray "
            "cluster (docs/ray.md). Default: TUNELINE_TRAIN_EXECUTOR."
        },
    )
    num_workers = StrictInt(
        validate=ma.validate.Range(1, 1024),
        metadata={"description": "Data-parallel training workers (ray; the process executor runs 1)."},
    )
    gpus_per_worker = StrictNumber(
        validate=ma.validate.Range(0.0, 64.0),
        metadata={"description": "GPUs each Ray worker takes (fractions allowed); 0 trains on CPU."},
    )


class JobCreateSchema(StrictSchema):
    model = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=256))
    training_file = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=128))
    validation_file = ma.fields.String(allow_none=True, validate=ma.validate.Length(min=1, max=128))
    hyperparameters = ma.fields.Nested(HyperparametersSchema)
    method = ma.fields.Nested(MethodSchema)
    suffix = ma.fields.String(allow_none=True, validate=ma.validate.Length(min=1, max=64))
    seed = StrictInt(allow_none=True, validate=ma.validate.Range(0, 2**31 - 1))
    metadata = ma.fields.Dict(
        keys=ma.fields.String(validate=ma.validate.Length(max=64)),
        values=ma.fields.String(validate=ma.validate.Length(max=512)),
        allow_none=True,
        validate=ma.validate.Length(max=15),
    )
    integrations = ma.fields.List(
        ma.fields.Nested(IntegrationSchema),
        allow_none=True,
        validate=ma.validate.Length(max=len(INTEGRATION_TYPES)),
        metadata={"description": "Experiment trackers the training reports to (wandb; mlflow on local)."},
    )
    provider = ma.fields.String(validate=ma.validate.OneOf(PROVIDERS))
    webhook = ma.fields.Nested(WebhookSchema)
    max_cost_usd = StrictNumber(validate=ma.validate.Range(0.0, 1_000_000.0))
    test_file = ma.fields.String(validate=ma.validate.Length(min=1, max=128))
    prepare = ma.fields.Nested(PrepareSchema)
    sandbox = ma.fields.Nested(SandboxFaultsSchema)
    compute = ma.fields.Nested(
        ComputeSchema,
        metadata={"description": "How a local job trains (Tuneline extension; local provider only)."},
    )
    priority = StrictInt(
        validate=ma.validate.Range(PRIORITY_MIN, PRIORITY_MAX),
        metadata={
            "description": "Place in the local trainer's wait queue: higher trains first (Tuneline "
            "extension; default 0)."
        },
    )


class JobErrorSchema(ma.Schema):
    code = ma.fields.String(allow_none=True)
    message = ma.fields.String(allow_none=True)
    param = ma.fields.String(allow_none=True)


class JobSchema(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE

    id = ma.fields.String(required=True)
    object = ma.fields.Constant("fine_tuning.job", required=True)
    created_at = ma.fields.Integer(required=True)
    error = ma.fields.Nested(JobErrorSchema, allow_none=True)
    fine_tuned_model = ma.fields.String(allow_none=True)
    finished_at = ma.fields.Integer(allow_none=True)
    hyperparameters = ma.fields.Dict(required=True)
    model = ma.fields.String(required=True)
    organization_id = ma.fields.String(required=True)
    result_files = ma.fields.List(ma.fields.String(), required=True)
    seed = ma.fields.Integer(
        required=True,
        metadata={"description": "The job's seed: the caller's, or one Tuneline picked (0-2147483647)."},
    )
    status = ma.fields.String(required=True, metadata={"enum": list(STATUSES)})
    trained_tokens = ma.fields.Integer(allow_none=True)
    training_file = ma.fields.String(required=True)
    validation_file = ma.fields.String(allow_none=True)
    integrations = ma.fields.List(ma.fields.Dict(), allow_none=True)
    metadata = ma.fields.Dict(allow_none=True)
    method = ma.fields.Dict(allow_none=True)
    estimated_finish = ma.fields.Integer(allow_none=True)
    suffix = ma.fields.String(allow_none=True)
    stage = ma.fields.String(required=True)
    provider = ma.fields.String(required=True)
    provider_status = ma.fields.String(allow_none=True)
    provider_job_id = ma.fields.String(allow_none=True)
    webhook = ma.fields.Dict(allow_none=True)
    max_cost_usd = ma.fields.Float(allow_none=True)
    estimate = ma.fields.Dict(allow_none=True)
    test_file = ma.fields.String(allow_none=True)
    prepare = ma.fields.Dict(allow_none=True)
    evaluation = ma.fields.Dict(
        allow_none=True, metadata={"description": "Held-out evaluation summary, once evaluated."}
    )
    experiment_id = ma.fields.String(allow_none=True)
    import_id = ma.fields.String(
        allow_none=True,
        metadata={"description": "Set on a job copied from a provider account by an import (read-only)."},
    )
    evaluated_model = ma.fields.String(
        metadata={
            "description": "Set on an evaluate-only job (an experiment candidate that trains nothing): "
            "the existing fine-tuned model it evaluates on its held-out test set."
        }
    )
    evaluated_job = ma.fields.String(
        allow_none=True, metadata={"description": "The job that made `evaluated_model`."}
    )
    updated_at = ma.fields.Integer(allow_none=True)
    tenant = ma.fields.String(metadata={"description": "The tenant that owns the job (Tuneline extension)."})
    priority = ma.fields.Integer(
        metadata={"description": "Wait-queue priority for local training (Tuneline extension)."}
    )
    compute = ma.fields.Dict(
        metadata={
            "description": "How a local job trains: {executor, num_workers, gpus_per_worker} as resolved "
            "at create (Tuneline extension; local jobs only)."
        }
    )


JobListSchema = list_schema(JobSchema, "JobList")


class JobListArgsSchema(MetadataFilterArgsSchema):
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))
    provider = ma.fields.String(validate=ma.validate.OneOf(PROVIDERS))
    tenant = ma.fields.String(
        validate=ma.validate.Length(min=1, max=63),
        metadata={"description": "Ops keys: only this tenant's jobs (members may pass only their own)."},
    )


EventListSchema = list_schema(EventSchema, "EventList")


class EventArgsSchema(CursorArgsSchema):
    stream = ma.fields.Boolean(
        load_default=False,
        metadata={"description": "Stream events as server-sent events until the job ends."},
    )


CheckpointListSchema = list_schema(CheckpointSchema, "CheckpointList")


class MetricsArgsSchema(StrictSchema):
    format = ma.fields.String(
        load_default="json",
        validate=ma.validate.OneOf(["json", "csv", "png"]),
        metadata={"description": "json (default), csv (OpenAI's columns) or png (the loss curve)."},
    )


class MetricsSchema(ma.Schema):
    object = ma.fields.Constant("list", required=True)
    job_id = ma.fields.String(required=True)
    data = ma.fields.List(ma.fields.Nested(MetricRowSchema), required=True)


class EvaluationScoresSchema(ma.Schema):
    answer = ma.fields.String(allow_none=True)
    error = ma.fields.Dict(allow_none=True)
    exact_match = ma.fields.Float(allow_none=True)
    char_f1 = ma.fields.Float(allow_none=True)
    rouge_l = ma.fields.Float(allow_none=True)
    bleu = ma.fields.Float(allow_none=True, metadata={"description": "Sentence BLEU, 0-100."})
    grader_score = ma.fields.Float(
        allow_none=True, metadata={"description": "Reinforcement jobs: the job's grader's score, 0-1."}
    )
    preferred_logprob = ma.fields.Float(
        allow_none=True,
        metadata={
            "description": "DPO: summed log-probability (nats) of the preferred output, given the prompt."
        },
    )
    non_preferred_logprob = ma.fields.Float(
        allow_none=True,
        metadata={"description": "DPO: summed log-probability (nats) of the non-preferred output."},
    )
    preference_error = ma.fields.Dict(
        allow_none=True, metadata={"description": "DPO: why the pair could not be scored."}
    )


class EvaluationExampleSchema(EvaluationScoresSchema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("fine_tuning.job.evaluation.example", required=True)
    index = ma.fields.Integer(required=True)
    prompt = ma.fields.String(required=True)
    reference = ma.fields.String(
        required=True, metadata={"description": "The reference answer (DPO: the preferred output)."}
    )
    non_preferred = ma.fields.String(metadata={"description": "DPO: the non-preferred output."})
    baseline = ma.fields.Nested(EvaluationScoresSchema, metadata={"description": "The base model's answer."})


class EvaluationSummarySchema(ma.Schema):
    examples = ma.fields.Integer(required=True)
    answered = ma.fields.Integer(required=True)
    errors = ma.fields.Integer(required=True)
    # Against the reference answers (supervised and DPO jobs; DPO: the preferred output).
    exact_match = ma.fields.Float(metadata={"description": "Mean, 0-1."})
    char_f1 = ma.fields.Float(metadata={"description": "Mean, 0-1 (CJK characters, words)."})
    rouge_l = ma.fields.Float(metadata={"description": "Mean ROUGE-L F1, 0-1."})
    bleu = ma.fields.Float(metadata={"description": "Corpus BLEU (sacrebleu), 0-100."})
    # Reinforcement jobs: scored by the job's grader.
    grader_score = ma.fields.Float(metadata={"description": "Mean grader score on the test split, 0-1."})
    preference_accuracy = ma.fields.Float(
        allow_none=True,
        metadata={
            "description": "DPO: share (0-1) of the held-out pairs whose preferred output the model gives "
            "a strictly higher log-probability than the non-preferred one (a tie counts as not "
            "preferred); null where the provider cannot score given replies."
        },
    )
    preference_margin = ma.fields.Float(
        allow_none=True,
        metadata={
            "description": "DPO: mean log p(preferred) - log p(non-preferred) over the scored pairs, nats."
        },
    )
    preference_pairs = ma.fields.Integer(metadata={"description": "DPO: how many pairs were scored."})


class EvaluationSchema(ma.Schema):
    object = ma.fields.Constant("fine_tuning.job.evaluation", required=True)
    job_id = ma.fields.String(required=True)
    model = ma.fields.String(allow_none=True)
    status = ma.fields.String(
        required=True, metadata={"enum": ["pending", "running", "completed", "failed", "not_run"]}
    )
    examples = ma.fields.Integer(required=True)
    metrics = ma.fields.Nested(EvaluationSummarySchema, allow_none=True)
    baseline = ma.fields.Nested(EvaluationSummarySchema, allow_none=True)
    baseline_model = ma.fields.String(allow_none=True)
    data = ma.fields.List(ma.fields.Nested(EvaluationExampleSchema), required=True)
    has_more = ma.fields.Boolean(required=True)
    first_id = ma.fields.String(allow_none=True)
    last_id = ma.fields.String(allow_none=True)
