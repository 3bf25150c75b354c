"""The grader routes' use cases: check a grader, and score one sample with it, for one caller."""

from __future__ import annotations

from typing import Any

from service.core.auth import Principal
from service.core.completions import CompletionsContext
from service.core.errors import Unprocessable
from service.core.graders import judges, run, spec
from service.core.graders.sandbox import PythonLimits
from service.settings import Settings

REWARD_ROOT = "method.reinforcement.grader"


def policy_for(ctx: CompletionsContext, principal: Principal) -> spec.Policy:
    """This deployment's rules for ``principal``: python graders per settings, their own judge models."""
    return spec.Policy(
        python_enabled=ctx.settings.python_grader_enabled,
        check_model=judges.model_check(ctx, principal),
    )


def context_for(ctx: CompletionsContext, principal: Principal) -> run.Context:
    """Python limits from settings and a judge that asks ``principal``'s fine-tuned models."""
    return run.Context(
        python_limits=python_limits(ctx.settings), judge=judges.completions_judge(ctx, principal)
    )


def validate_grader(ctx: CompletionsContext, principal: Principal, raw: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/fine_tuning/alpha/graders/validate``: the grader back when it is valid here."""
    spec.parse(raw, policy_for(ctx, principal))
    return {"grader": raw}


def run_grader(ctx: CompletionsContext, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/fine_tuning/alpha/graders/run``: score ``model_sample`` for ``item``."""
    grader = spec.parse(body["grader"], policy_for(ctx, principal))
    return run.run(grader, body["model_sample"], body.get("item"), context_for(ctx, principal))


def python_limits(settings: Settings) -> PythonLimits:
    return PythonLimits(
        timeout_s=settings.python_grader_timeout_s, memory_bytes=settings.python_grader_memory_mb * 1024**2
    )


def _no_judge(model: str, param: str) -> None:
    raise Unprocessable(
        f"{param}: a model grader cannot score a local reinforcement run or a held-out evaluation yet "
        "(neither calls a judge model); use string_check, text_similarity, python or multi.",
        param=param,
        code="judge_unavailable",
    )


def reward_grader(settings: Settings, raw: Any) -> spec.Grader:
    """A reinforcement job's grader, when Tuneline itself scores with it (the local trainer's
    reward, a held-out evaluation): python graders if the operator enabled them, no model graders.
    Errors name ``method.reinforcement.grader.<path>``."""
    policy = spec.Policy(python_enabled=settings.python_grader_enabled, check_model=_no_judge)
    return spec.parse(raw, policy, root=REWARD_ROOT)


def reward_context(settings: Settings) -> run.Context:
    """How Tuneline runs a reward grader: the operator's python limits, no judge."""
    return run.Context(python_limits=python_limits(settings), root=REWARD_ROOT)
