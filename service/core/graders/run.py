"""Scoring one sample with a grader, and OpenAI's ``graders/run`` answer built from the score.

``grade`` is what a caller uses (the run route here; the reinforcement trainer's reward later):
it renders the templates, scores, and returns a ``Grade`` with the reward, each sub-grader's
score for ``multi``, and OpenAI's error flags. Failures that belong to the sample or the grader's
code (a python grader that raises or goes over its limits, a judge that answers nonsense) are
reported in the flags with a reward of 0, as OpenAI's run route does; a template variable the item
or sample lacks, or a formula that cannot be computed, is raised (422 naming the grader path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from service.core.graders import judges, similarity, spec
from service.core.graders.grade import Grade
from service.core.graders.sandbox import PythonLimits, run_python
from service.core.graders.templates import Sample, Where, missing_item_variables, render

ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


@dataclass(frozen=True)
class Context:
    """How graders run here: python limits and the judge (None: model graders cannot run)."""

    python_limits: PythonLimits = field(default_factory=PythonLimits)
    judge: judges.Judge | None = None
    root: str = "grader"


def grade(grader: spec.Grader, model_sample: str, item: Any, ctx: Context) -> Grade:
    """Score ``model_sample`` (the model's answer as text) for dataset row ``item``."""
    row = item if item is not None else {}
    return _grade(grader, Sample.from_text(model_sample), row, ctx, Where("", ctx.root))


def _grade(grader: spec.Grader, sample: Sample, item: Any, ctx: Context, where: Where) -> Grade:
    if isinstance(grader, spec.StringCheck):
        text = render(grader.input, item, sample, where.child("input"))
        reference = render(grader.reference, item, sample, where.child("reference"))
        return Grade(_string_check(grader.operation, text, reference))
    if isinstance(grader, spec.TextSimilarity):
        text = render(grader.input, item, sample, where.child("input"))
        reference = render(grader.reference, item, sample, where.child("reference"))
        return Grade(similarity.similarity(grader.evaluation_metric, text, reference))
    if isinstance(grader, spec.Python):
        return _python(grader, sample, item, ctx)
    if isinstance(grader, spec.ScoreModel | spec.LabelModel):
        messages = [
            {"role": m.role, "content": render(m.content, item, sample, where.child(f"input.{i}.content"))}
            for i, m in enumerate(grader.input)
        ]
        return judges.judge(grader, messages, ctx.judge, where)
    return _multi(grader, sample, item, ctx, where)


@dataclass(frozen=True)
class MissingField:
    """A dataset row that a grader cannot score: ``param`` (``grader.graders.exact.reference``)
    uses ``variable`` (``item.answer``), which the row does not have."""

    param: str
    variable: str

    @property
    def field(self) -> str:
        """The row's missing field, as a report names it (``answer``, ``answers[0].text``)."""
        return self.variable.removeprefix("item.")

    @property
    def message(self) -> str:
        return f"{self.param} uses '{{{{{self.variable}}}}}', which this row does not have"


def missing_fields(grader: spec.Grader, item: Any, root: str = "grader") -> list[MissingField]:
    """Every ``item.*`` template variable of ``grader`` that the row ``item`` lacks (python graders
    read the item in code, so they cannot be checked before they run)."""
    found: list[MissingField] = []
    for template, where in _templates(grader, Where("", root)):
        found += [MissingField(where.param, v) for v in missing_item_variables(template, item, where)]
    return found


def _templates(grader: spec.Grader, where: Where) -> list[tuple[str, Where]]:
    if isinstance(grader, spec.StringCheck | spec.TextSimilarity):
        return [(grader.input, where.child("input")), (grader.reference, where.child("reference"))]
    if isinstance(grader, spec.ScoreModel | spec.LabelModel):
        return [(m.content, where.child(f"input.{i}.content")) for i, m in enumerate(grader.input)]
    if isinstance(grader, spec.Multi):
        return [
            pair
            for key, child in grader.graders.items()
            for pair in _templates(child, where.child(f"graders.{key}"))
        ]
    return []


def _string_check(operation: str, text: str, reference: str) -> float:
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    return float(reference.casefold() in text.casefold())  # ilike


def _python(grader: spec.Python, sample: Sample, item: Any, ctx: Context) -> Grade:
    outcome = run_python(grader.source, sample.as_dict(), item, ctx.python_limits)
    if outcome.score is not None:
        return Grade(outcome.score)
    return Grade(
        0.0,
        errors={
            "python_grader_runtime_error": True,
            "python_grader_runtime_error_details": f"{outcome.error}: {outcome.details}",
        },
    )


def _multi(grader: spec.Multi, sample: Sample, item: Any, ctx: Context, where: Where) -> Grade:
    out = Grade(0.0)
    for key, child in grader.graders.items():
        part = _grade(child, sample, item, ctx, where.child(f"graders.{key}"))
        out.sub_rewards[key] = part.reward
        out.errors.update({k: v for k, v in part.errors.items() if v})
        for model, tokens in part.token_usage.items():
            out.token_usage[model] = out.token_usage.get(model, 0) + tokens
    out.reward = grader.formula.evaluate(out.sub_rewards)
    return out


def run(grader: spec.Grader, model_sample: str, item: Any, ctx: Context) -> dict[str, Any]:
    """OpenAI's ``POST /fine_tuning/alpha/graders/run`` answer for one sample."""
    started = time.monotonic()
    result = grade(grader, model_sample, item, ctx)
    errors: dict[str, Any] = {flag: bool(result.errors.get(flag)) for flag in ERROR_FLAGS}
    errors["python_grader_runtime_error_details"] = result.errors.get("python_grader_runtime_error_details")
    errors["python_grader_server_error_type"] = None
    errors["model_grader_server_error_details"] = result.errors.get("model_grader_server_error_details")
    model_details = result.errors.get("model_grader_parse_error_details")
    if model_details:
        errors["model_grader_parse_error_details"] = model_details  # additive: why the judge's answer failed
    return {
        "reward": result.reward,
        "sub_rewards": result.sub_rewards,
        "model_grader_token_usage_per_model": result.token_usage,
        "metadata": {
            "name": grader.name,
            "type": grader.type,
            "errors": errors,
            "execution_time": round(time.monotonic() - started, 6),
            "scores": dict(result.sub_rewards) or {grader.name: result.reward},
            "token_usage": sum(result.token_usage.values()) if result.token_usage else None,
            "sampled_model_name": None,
        },
    }
