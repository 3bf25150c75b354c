"""The grader routes' use cases: check a grader, and score one sample with it, for one caller."""

from __future__ import annotations

from typing import Any

from service.core.auth import Principal
from service.core.completions import CompletionsContext
from service.core.graders import judges, run, spec
from service.core.graders.sandbox import PythonLimits


def policy_for(ctx: CompletionsContext, principal: Principal) -> spec.Policy:
    """This deployment's rules for ``principal``: python graders per settings, their own judge models."""
    return spec.Policy(
        python_enabled=ctx.settings.python_grader_enabled,
        check_model=judges.model_check(ctx, principal),
    )


def context_for(ctx: CompletionsContext, principal: Principal) -> run.Context:
    """Python limits from settings and a judge that asks ``principal``'s fine-tuned models."""
    limits = PythonLimits(
        timeout_s=ctx.settings.python_grader_timeout_s,
        memory_bytes=ctx.settings.python_grader_memory_mb * 1024**2,
    )
    return run.Context(python_limits=limits, judge=judges.completions_judge(ctx, principal))


def validate_grader(ctx: CompletionsContext, principal: Principal, raw: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/fine_tuning/alpha/graders/validate``: the grader back when it is valid here."""
    spec.parse(raw, policy_for(ctx, principal))
    return {"grader": raw}


def run_grader(ctx: CompletionsContext, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/fine_tuning/alpha/graders/run``: score ``model_sample`` for ``item``."""
    grader = spec.parse(body["grader"], policy_for(ctx, principal))
    return run.run(grader, body["model_sample"], body.get("item"), context_for(ctx, principal))
