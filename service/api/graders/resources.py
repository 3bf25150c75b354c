"""``POST /v1/fine_tuning/alpha/graders/validate`` and ``/run``: OpenAI's grader routes, run by Tuneline."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.api.base import Blueprint, principal
from service.api.completions.resources import context
from service.api.graders.schemas import (
    ITEM_EXAMPLE,
    MULTI_EXAMPLE,
    RUN_EXAMPLE,
    SAMPLE_EXAMPLE,
    GraderRunResponseSchema,
    GraderRunSchema,
    GraderValidateResponseSchema,
    GraderValidateSchema,
)
from service.core.graders import usecases

blp = Blueprint(
    "graders",
    __name__,
    url_prefix="/v1/fine_tuning/alpha/graders",
    description="Check a grader and try it on one sample before paying for a reinforcement run "
    "(OpenAI's routes; the SDK's `client.fine_tuning.alpha.graders`).",
)


@blp.route("/validate")
class GraderValidate(MethodView):
    @blp.arguments(GraderValidateSchema, example={"grader": MULTI_EXAMPLE})
    @blp.response(200, GraderValidateResponseSchema, example={"grader": MULTI_EXAMPLE})
    def post(self, body: dict[str, Any]) -> Any:
        """Validate a grader; errors name the grader path (`grader.graders.fund.reference`)."""
        return usecases.validate_grader(context(), principal(), body["grader"])


@blp.route("/run")
class GraderRun(MethodView):
    @blp.arguments(
        GraderRunSchema,
        example={"grader": MULTI_EXAMPLE, "model_sample": SAMPLE_EXAMPLE, "item": ITEM_EXAMPLE},
    )
    @blp.response(200, GraderRunResponseSchema, example=RUN_EXAMPLE)
    def post(self, body: dict[str, Any]) -> Any:
        """Run a grader on one model sample and dataset item."""
        return usecases.run_grader(context(), principal(), body)
