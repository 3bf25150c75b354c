"""Ops routes: ``GET /v1/stats`` (members: own tenant; ops: all or one) and ``GET /metrics``."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, current_app
from flask.views import MethodView
from prometheus_client import CONTENT_TYPE_LATEST

from service.api import examples
from service.api.auth import bearer
from service.api.base import Blueprint, principal, services
from service.api.ops import prometheus
from service.api.ops.schemas import StatsArgsSchema, StatsSchema
from service.core import auth
from service.core.errors import NotFound
from service.core.jobs import stats
from service.taskqueue import QUEUES

blp = Blueprint("ops", __name__, description="Ops views: job statistics and the Prometheus exposition.")


@blp.route("/v1/stats")
class Stats(MethodView):
    @blp.arguments(StatsArgsSchema, location="query")
    @blp.response(200, StatsSchema, example=examples.STATS)
    def get(self, args: dict[str, Any]) -> Any:
        """Jobs by status, stage and provider; queue depths; oldest active job per stage."""
        svc = services()
        return stats.summary(svc.store, svc.broker, principal(), QUEUES, time.time(), args.get("tenant"))


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(security=[{}, {"bearerAuth": []}])
    @blp.response(
        200,
        description="Prometheus text exposition (served only when TUNELINE_METRICS_ENABLED is set).",
        content_type=CONTENT_TYPE_LATEST.split(";")[0],
    )
    def get(self) -> Any:
        """Prometheus metrics: no key (internal scrape port) or an ops key; 404 when disabled."""
        if not services().settings.metrics_enabled:
            raise NotFound("Metrics are not enabled on this server.", code="metrics_disabled")
        auth.scrape_principal(services().store, bearer())
        return Response(prometheus.exposition(current_app), content_type=CONTENT_TYPE_LATEST)
