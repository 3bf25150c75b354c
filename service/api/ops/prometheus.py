"""Prometheus exposition (``GET /metrics``): job figures collected at scrape time, HTTP counters.

Each app gets its own ``CollectorRegistry`` (never the library's global one), so building several
apps in one process, as the tests do, registers nothing twice.

The job figures come from the store's counters (see ``service.core.store.stats``), read once per
scrape, so every gunicorn worker exports the same values. The HTTP request counter is kept in
the answering process: with several workers a scrape sees one worker's count, so scrape a
single-worker internal port, or read request rates from the load balancer instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from service.core.auth import INTERNAL
from service.core.jobs import stats
from service.taskqueue import QUEUES

EXTENSION = "tuneline_metrics"
FIRST_TOKEN = "tuneline_first_token"
# Seconds from a streamed completion's request to its first piece: a loaded local model on a CPU
# answers in tenths of a second, a first load or a busy infer worker takes seconds.
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class JobsCollector(Collector):
    """Jobs by status, stage and provider, queue depths and the oldest active job per stage."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        svc = self.app.extensions["tuneline"]
        found = stats.summary(svc.store, svc.broker, INTERNAL, QUEUES, time.time())
        jobs = found["jobs"]
        for label, name, doc in (
            ("status", "by_status", "Jobs by OpenAI status."),
            ("stage", "by_stage", "Jobs by Tuneline stage."),
            ("provider", "by_provider", "Jobs by provider."),
        ):
            family = GaugeMetricFamily(f"tuneline_jobs_{name}", doc, labels=[label])
            for value, count in jobs[name].items():
                family.add_metric([value], count)
            yield family
        total = GaugeMetricFamily("tuneline_jobs", "Jobs ever created (all tenants).")
        total.add_metric([], jobs["total"])
        yield total
        queues = GaugeMetricFamily(
            "tuneline_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        for queue, depth in found["queues"].items():
            queues.add_metric([queue], depth)
        yield queues
        oldest = GaugeMetricFamily(
            "tuneline_oldest_active_job_age_seconds",
            "Age of the oldest non-terminal job in each stage (absent when the stage is empty).",
            labels=["stage"],
        )
        for stage, job in found["oldest_active"].items():
            oldest.add_metric([stage], job["age_s"])
        yield oldest


def register(app: Flask) -> None:
    """Create the app's registry and count every request it answers."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(app))
    requests = Counter(
        "tuneline_http_requests",
        "HTTP requests answered by this process, by route template, method and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    app.extensions[EXTENSION] = registry
    app.extensions[FIRST_TOKEN] = Histogram(
        "tuneline_completion_time_to_first_token_seconds",
        "Streamed completions answered by this process: request to first piece of the answer, by provider.",
        ["provider"],
        buckets=FIRST_TOKEN_BUCKETS,
        registry=registry,
    )

    # The counter's child per (method, route, status): ``labels()`` validates and locks on every
    # call, and the set of keys is small (route templates, not paths).
    children: dict[tuple[str, str, int], Any] = {}

    @app.after_request
    def count(response: Any) -> Any:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        rule = req.url_rule
        key = (req.method, "<unmatched>" if rule is None else rule.rule, response.status_code)
        child = children.get(key)
        if child is None:
            child = children[key] = requests.labels(key[0], key[1], str(key[2]))
        child.inc()
        return response


def observe_first_token(app: Flask, provider: str, seconds: float) -> None:
    app.extensions[FIRST_TOKEN].labels(provider).observe(seconds)


def exposition(app: Flask) -> bytes:
    return generate_latest(app.extensions[EXTENSION])
