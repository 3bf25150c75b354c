"""``/v1/experiments``: several candidates on one training file and test set, side by side."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.api.base import Blueprint, CursorArgsSchema, list_body, principal, services
from service.api.experiments.schemas import (
    ExperimentArgsSchema,
    ExperimentCreateSchema,
    ExperimentListSchema,
    ExperimentSchema,
)
from service.api.idempotent import idempotent
from service.api.jobs.resources import IDEMPOTENCY_HEADER, jobs_context
from service.core import experiments

blp = Blueprint(
    "experiments",
    __name__,
    url_prefix="/v1/experiments",
    description="Train several candidates (provider, base model, hyperparameters) on identical data "
    "and split, evaluate each on the same held-out set, and compare them side by side.",
)


@blp.route("")
class Experiments(MethodView):
    @blp.arguments(ExperimentCreateSchema)
    @blp.response(200, ExperimentSchema)
    @blp.doc(parameters=IDEMPOTENCY_HEADER)
    def post(self, body: dict[str, Any]) -> Any:
        """Create an experiment: one fine-tuning job per candidate (nothing starts on bad input)."""
        return idempotent(
            {"route": "experiments.create", **body},
            lambda: experiments.create_experiment(jobs_context(), principal(), body),
        )

    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, ExperimentListSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """List your experiments, newest first (their tables, without per-example answers)."""
        return list_body(
            *experiments.list_experiments(services().store, principal(), args.get("after"), args["limit"])
        )


@blp.route("/<string:experiment_id>")
class ExperimentById(MethodView):
    @blp.arguments(ExperimentArgsSchema, location="query")
    @blp.response(200, ExperimentSchema)
    def get(self, args: dict[str, Any], experiment_id: str) -> Any:
        """The side-by-side table and a page of per-example answers next to the references."""
        return experiments.get_experiment(
            services().store, principal(), experiment_id, args.get("after"), args["limit"]
        )
