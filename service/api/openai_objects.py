"""Marshmallow schemas of OpenAI's objects, shared by Tuneline's own routes and the sandbox's."""

from __future__ import annotations

from typing import Any

import marshmallow as ma


class OpenAIFileSchema(ma.Schema):
    """OpenAI's ``file`` object."""

    id = ma.fields.String(required=True)
    object = ma.fields.Constant("file", required=True)
    bytes = ma.fields.Integer(required=True)
    created_at = ma.fields.Integer(required=True)
    filename = ma.fields.String(required=True)
    purpose = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": ["uploaded", "processed", "error"]})
    status_details = ma.fields.String(allow_none=True)
    expires_at = ma.fields.Integer(allow_none=True)


class EventSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("fine_tuning.job.event", required=True)
    created_at = ma.fields.Integer(required=True)
    level = ma.fields.String(required=True, metadata={"enum": ["info", "warn", "error"]})
    message = ma.fields.String(required=True)
    type = ma.fields.String(metadata={"enum": ["message", "metrics"]})
    data = ma.fields.Dict()


class MetricRowSchema(ma.Schema):
    step = ma.fields.Integer(required=True)
    train_loss = ma.fields.Float(allow_none=True)
    train_mean_token_accuracy = ma.fields.Float(allow_none=True)
    valid_loss = ma.fields.Float(allow_none=True)
    valid_mean_token_accuracy = ma.fields.Float(allow_none=True)
    full_valid_loss = ma.fields.Float(allow_none=True)
    full_valid_mean_token_accuracy = ma.fields.Float(allow_none=True)
    # DPO jobs (method.type "dpo") carry these in place of the token accuracies.
    train_reward_margin = ma.fields.Float(allow_none=True)
    train_preference_accuracy = ma.fields.Float(allow_none=True)
    valid_reward_margin = ma.fields.Float(allow_none=True)
    valid_preference_accuracy = ma.fields.Float(allow_none=True)
    full_valid_reward_margin = ma.fields.Float(allow_none=True)
    full_valid_preference_accuracy = ma.fields.Float(allow_none=True)
    # Reinforcement jobs: the loss, then the grader's mean reward over the sampled answers and its
    # spread, their mean length in tokens and the KL divergence from the reference model.
    train_reward_mean = ma.fields.Float(allow_none=True)
    train_reward_std = ma.fields.Float(allow_none=True)
    train_completion_length = ma.fields.Float(allow_none=True)
    train_kl = ma.fields.Float(allow_none=True)
    valid_reward_mean = ma.fields.Float(allow_none=True)
    valid_reward_std = ma.fields.Float(allow_none=True)
    valid_completion_length = ma.fields.Float(allow_none=True)
    valid_kl = ma.fields.Float(allow_none=True)
    full_valid_reward_mean = ma.fields.Float(allow_none=True)
    full_valid_reward_std = ma.fields.Float(allow_none=True)
    full_valid_completion_length = ma.fields.Float(allow_none=True)
    full_valid_kl = ma.fields.Float(allow_none=True)

    @ma.post_dump(pass_original=True)
    def _grader_scores(self, data: dict[str, Any], original: Any, **kwargs: Any) -> dict[str, Any]:
        """A reinforcement job's ``multi`` grader adds one column per named grader
        (``train_grader_<name>``, ``valid_grader_<name>``, ``full_valid_grader_<name>``)."""
        if isinstance(original, dict):
            data.update({k: v for k, v in original.items() if k.split("_grader_", 1)[0] in _PREFIXES})
        return data


_PREFIXES = ("train", "valid", "full_valid")


class CheckpointSchema(ma.Schema):
    id = ma.fields.String(required=True)
    object = ma.fields.Constant("fine_tuning.job.checkpoint", required=True)
    created_at = ma.fields.Integer(required=True)
    fine_tuned_model_checkpoint = ma.fields.String(required=True)
    fine_tuning_job_id = ma.fields.String(required=True)
    step_number = ma.fields.Integer(required=True)
    metrics = ma.fields.Nested(MetricRowSchema, required=True)


class CompletionSchema(ma.Schema):
    """OpenAI's ``chat.completion`` or ``text_completion`` object."""

    id = ma.fields.String(required=True)
    object = ma.fields.String(required=True, metadata={"enum": ["chat.completion", "text_completion"]})
    created = ma.fields.Integer(required=True)
    model = ma.fields.String(required=True)
    system_fingerprint = ma.fields.String()
    choices = ma.fields.List(ma.fields.Dict(), required=True)
    usage = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
