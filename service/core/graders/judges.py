"""``score_model`` and ``label_model``: a Tuneline model as the judge, asked through an injected callable.

The grading core only knows ``Judge``: a function from a ``JudgeRequest`` (model, chat messages,
sampling) to a ``JudgeReply`` (text, tokens), raising ``JudgeError`` when the model cannot answer.
``completions_judge`` wires it to the completions use case for the caller's own fine-tuned models
(remote or local, routed to the provider that trained them); ``model_check`` refuses, at
validation, a judge model that Tuneline cannot serve for that caller.

The judge is told the answer format in a leading system message, as OpenAI's graders do behind
the scenes: ``{"result": <score>}`` within the grader's range, or ``{"result": "<label>"}``. A
bare number or a bare label is accepted too (small models drop the JSON); anything else is a
``model_grader_parse_error`` with a reward of 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.core import finetuned_models
from service.core.auth import Principal
from service.core.backends.base import BackendError, CompletionRequest
from service.core.completions import CompletionsContext, run_completion
from service.core.errors import NotFound, TunelineError, Unprocessable
from service.core.graders import spec
from service.core.graders.grade import Grade
from service.core.graders.templates import Where

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class JudgeRequest:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0  # a grade should not depend on sampling luck


@dataclass(frozen=True)
class JudgeReply:
    text: str
    tokens: int = 0


class JudgeError(Exception):
    """The judge model could not answer (provider down, timeout); reported, not raised to the caller."""


Judge = Callable[[JudgeRequest], JudgeReply]


def _instruction(grader: spec.ScoreModel | spec.LabelModel) -> str:
    if isinstance(grader, spec.ScoreModel):
        low, high = grader.range
        return (
            f'Grade the response. Answer with JSON only: {{"result": <a number from {low:g} to {high:g}>}}.'
        )
    labels = ", ".join(json.dumps(label, ensure_ascii=False) for label in grader.labels)
    return f'Classify the response. Answer with JSON only: {{"result": <one of {labels}>}}.'


def _result(text: str) -> Any:
    """The ``result`` of the first JSON object in ``text``, else the whole stripped text."""
    decoder = json.JSONDecoder()
    for start, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and "result" in value:
            return value["result"]
    return text.strip().strip("\"'`. \n")


def _score(grader: spec.ScoreModel, text: str) -> tuple[float | None, str]:
    value = _result(text)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None, f"the judge's answer has no score: {text[:200]!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"the judge's result is not a number: {value!r}"
    low, high = grader.range
    if not low <= value <= high:
        return None, f"the judge's score {value:g} is outside the range [{low:g}, {high:g}]"
    return float(value), ""


def _label(grader: spec.LabelModel, text: str) -> tuple[str | None, str]:
    value = _result(text)
    if isinstance(value, str):
        if value in grader.labels:
            return value, ""
        folded = {label.casefold(): label for label in grader.labels}
        if value.casefold() in folded:
            return folded[value.casefold()], ""
    return None, f"the judge's answer is not one of the labels: {text[:200]!r}"


def judge(
    grader: spec.ScoreModel | spec.LabelModel, messages: list[dict[str, str]], ask: Judge | None, where: Where
) -> Grade:
    """Ask the judge about rendered ``messages``: the reward, or the error flags with a reward of 0."""
    if ask is None:
        param = where.child("model").param
        raise Unprocessable(f"{param}: no judge can serve here", param=param, code="judge_unavailable")
    request = JudgeRequest(
        model=grader.model,
        messages=[{"role": "system", "content": _instruction(grader)}, *messages],
        max_tokens=getattr(grader, "max_tokens", None) or DEFAULT_MAX_TOKENS,
        temperature=getattr(grader, "temperature", None) or 0.0,
    )
    try:
        reply = ask(request)
    except JudgeError as exc:
        return Grade(
            0.0, errors={"model_grader_server_error": True, "model_grader_server_error_details": str(exc)}
        )
    usage = {grader.model: reply.tokens}
    if isinstance(grader, spec.ScoreModel):
        score, why = _score(grader, reply.text)
        reward = score
    else:
        label, why = _label(grader, reply.text)
        reward = None if label is None else float(label in grader.passing_labels)
    if reward is None:
        errors = {"model_grader_parse_error": True, "model_grader_parse_error_details": why}
        return Grade(0.0, errors=errors, token_usage=usage)
    return Grade(reward, token_usage=usage)


def model_check(ctx: CompletionsContext, principal: Principal) -> spec.ModelCheck:
    """Refuse a judge model that is not one of ``principal``'s fine-tuned models here."""

    def check(model: str, param: str) -> None:
        try:
            finetuned_models.resolve(ctx.store, principal, model)
        except NotFound:
            raise Unprocessable(
                f"{param}: '{model}' cannot judge here. A judge must be one of your fine-tuned models on "
                "this Tuneline (its completions route serves it); base models and OpenAI's models are "
                "not served.",
                param=param,
                code="judge_unavailable",
            ) from None

    return check


def completions_judge(ctx: CompletionsContext, principal: Principal) -> Judge:
    """A Judge that asks ``principal``'s fine-tuned model through the completions use case."""

    def ask(request: JudgeRequest) -> JudgeReply:
        job = finetuned_models.resolve(ctx.store, principal, request.model)
        completion = CompletionRequest(
            model=request.model,
            messages=[dict(m) for m in request.messages],
            prompt=None,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        try:
            result = run_completion(ctx, job, completion)
        except BackendError as exc:
            raise JudgeError(f"the judge model's provider failed: {exc.message}") from exc
        except TunelineError as exc:  # a local model that timed out or cannot load
            raise JudgeError(f"the judge model could not answer: {exc.message}") from exc
        return JudgeReply(text=result.text, tokens=result.prompt_tokens + result.completion_tokens)

    return ask
