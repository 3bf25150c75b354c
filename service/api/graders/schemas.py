"""Schemas of the grader routes: OpenAI's request and response shapes (core checks the grader)."""

from __future__ import annotations

import marshmallow as ma

from service.api.base import StrictSchema

GRADER_TYPES = ("string_check", "text_similarity", "multi", "python", "score_model", "label_model")

MULTI_EXAMPLE = {
    "type": "multi",
    "name": "extraction",
    "graders": {
        "name": {
            "type": "text_similarity",
            "name": "name",
            "input": "{{sample.output_json.name}}",
            "reference": "{{item.name}}",
            "evaluation_metric": "fuzzy_match",
        },
        "fund": {
            "type": "string_check",
            "name": "fund",
            "input": "{{sample.output_json.fund}}",
            "reference": "{{item.fund}}",
            "operation": "eq",
        },
    },
    "calculate_output": "0.5 * name + 0.5 * fund",
}
ITEM_EXAMPLE = {"name": "张伟", "fund": "易方达蓝筹精选"}
SAMPLE_EXAMPLE = '{"name": "张伟", "fund": "易方达蓝筹精选"}'
ERRORS_EXAMPLE = {
    "formula_parse_error": False,
    "invalid_variable_error": False,
    "model_grader_parse_error": False,
    "model_grader_refusal_error": False,
    "model_grader_server_error": False,
    "model_grader_server_error_details": None,
    "other_error": False,
    "python_grader_runtime_error": False,
    "python_grader_runtime_error_details": None,
    "python_grader_server_error": False,
    "python_grader_server_error_type": None,
    "sample_parse_error": False,
    "truncated_observation_error": False,
    "unresponsive_reward_error": False,
}
RUN_EXAMPLE = {
    "reward": 1.0,
    "sub_rewards": {"name": 1.0, "fund": 1.0},
    "model_grader_token_usage_per_model": {},
    "metadata": {
        "name": "extraction",
        "type": "multi",
        "errors": ERRORS_EXAMPLE,
        "execution_time": 0.0021,
        "scores": {"name": 1.0, "fund": 1.0},
        "token_usage": None,
        "sampled_model_name": None,
    },
}


def _grader_field() -> ma.fields.Dict:
    return ma.fields.Dict(
        required=True,
        metadata={
            "description": (
                "A grader in OpenAI's JSON: `type` is one of "
                + ", ".join(f"`{t}`" for t in GRADER_TYPES)
                + ". Templates: `{{item.<field>}}`, `{{sample.output_text}}`, "
                "`{{sample.output_json.<field>}}`. "
                "See docs/graders.md for what Tuneline runs and refuses."
            ),
            "example": MULTI_EXAMPLE,
        },
    )


class GraderValidateSchema(StrictSchema):
    grader = _grader_field()


class GraderRunSchema(StrictSchema):
    grader = _grader_field()
    model_sample = ma.fields.String(
        required=True,
        validate=ma.validate.Length(max=1024 * 1024),
        metadata={"description": "The model's answer; `sample.output_json` is set when it is valid JSON."},
    )
    item = ma.fields.Raw(
        allow_none=True,
        metadata={"description": "The dataset row, the `item` namespace of the templates."},
    )


class GraderValidateResponseSchema(ma.Schema):
    grader = ma.fields.Dict(required=True, metadata={"description": "The grader, as sent, when it is valid."})


class GraderRunErrorsSchema(ma.Schema):
    formula_parse_error = ma.fields.Boolean(required=True)
    invalid_variable_error = ma.fields.Boolean(required=True)
    model_grader_parse_error = ma.fields.Boolean(required=True)
    model_grader_parse_error_details = ma.fields.String(
        metadata={"description": "Tuneline: why the judge's answer could not be read (additive)."}
    )
    model_grader_refusal_error = ma.fields.Boolean(required=True)
    model_grader_server_error = ma.fields.Boolean(required=True)
    model_grader_server_error_details = ma.fields.String(allow_none=True, required=True)
    other_error = ma.fields.Boolean(required=True)
    python_grader_runtime_error = ma.fields.Boolean(required=True)
    python_grader_runtime_error_details = ma.fields.String(
        allow_none=True,
        required=True,
        metadata={
            "description": "How the python grader failed: an exception, `timeout`, `cpu_limit`, "
            "`memory_limit` or `crashed`, with its details."
        },
    )
    python_grader_server_error = ma.fields.Boolean(required=True)
    python_grader_server_error_type = ma.fields.String(allow_none=True, required=True)
    sample_parse_error = ma.fields.Boolean(required=True)
    truncated_observation_error = ma.fields.Boolean(required=True)
    unresponsive_reward_error = ma.fields.Boolean(required=True)


class GraderRunMetadataSchema(ma.Schema):
    name = ma.fields.String(required=True)
    type = ma.fields.String(required=True)
    errors = ma.fields.Nested(GraderRunErrorsSchema, required=True)
    execution_time = ma.fields.Float(required=True)
    scores = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(), required=True)
    token_usage = ma.fields.Integer(allow_none=True, required=True)
    sampled_model_name = ma.fields.String(allow_none=True, required=True)


class GraderRunResponseSchema(ma.Schema):
    reward = ma.fields.Float(required=True)
    sub_rewards = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(), required=True)
    model_grader_token_usage_per_model = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Integer(), required=True
    )
    metadata = ma.fields.Nested(GraderRunMetadataSchema, required=True)
