"""Job pipeline tasks: ids in, one core step each, the next step enqueued by name."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery, Task

from service import taskqueue
from service.core.completions import CompletionsContext
from service.core.evaluation import stage as evaluation
from service.core.jobs import pipeline
from service.core.jobs.pipeline import PipelineContext, Retry
from service.core.providers.base import Provider
from service.core.providers.registry import provider_for
from workers.context import context

log = logging.getLogger("tuneline.worker.jobs")
MAX_RETRIES = 8
EVALUATE_TIME_LIMIT_S = 3600  # a long test set; a killed run resumes from the stored rows


@cache
def _provider(name: str) -> Provider:
    return provider_for(name, context().settings)


def _pipeline() -> PipelineContext:
    ctx = context()
    return PipelineContext(settings=ctx.settings, store=ctx.store, providers=_provider)


def _completions() -> CompletionsContext:
    ctx = context()
    return CompletionsContext(
        settings=ctx.settings, store=ctx.store, dispatcher=ctx.dispatcher, providers=_provider
    )


def _next(task_name: str | None, job_id: str) -> None:
    if task_name:
        context().dispatcher.enqueue(task_name, job_id)


def _run(task: Task, step: Any, job_id: str) -> None:
    """Run one step; a transient failure re-runs it after a short, bounded countdown."""
    try:
        result = step(_pipeline(), job_id, task.request.retries)
    except Retry as exc:
        log.info("step will retry", extra={"job_id": job_id, "task": task.name, "delay": exc.delay})
        if task.request.retries >= MAX_RETRIES:
            pipeline.fail(_pipeline(), job_id, "provider_unavailable", f"gave up after retries: {exc}")
            return
        raise task.retry(countdown=min(exc.delay, 60.0), max_retries=MAX_RETRIES) from None
    _next(result, job_id)


def register(app: Celery) -> None:
    @app.task(name=taskqueue.JOB_PREPARE, bind=True)
    def prepare(self: Task, job_id: str) -> None:
        _next(pipeline.run_prepare(_pipeline(), job_id), job_id)

    @app.task(name=taskqueue.JOB_UPLOAD, bind=True)
    def upload(self: Task, job_id: str) -> None:
        _run(self, pipeline.run_upload, job_id)

    @app.task(name=taskqueue.JOB_SUBMIT, bind=True)
    def submit(self: Task, job_id: str) -> None:
        _run(self, pipeline.run_submit, job_id)

    @app.task(name=taskqueue.JOB_POLL, bind=True)
    def poll(self: Task, job_id: str) -> None:
        _next(pipeline.run_poll(_pipeline(), job_id), job_id)

    @app.task(name=taskqueue.JOB_FINALIZE, bind=True)
    def finalize(self: Task, job_id: str) -> None:
        _run(self, pipeline.run_finalize, job_id)

    @app.task(
        name=taskqueue.JOB_EVALUATE,
        time_limit=EVALUATE_TIME_LIMIT_S,
        soft_time_limit=EVALUATE_TIME_LIMIT_S - 60,
    )
    def evaluate(job_id: str) -> None:
        evaluation.run_evaluate(_completions(), job_id)

    @app.task(name=taskqueue.JOB_CANCEL, bind=True)
    def cancel(self: Task, job_id: str) -> None:
        _run(self, pipeline.run_cancel, job_id)

    @app.task(name=taskqueue.POLL_SCAN)
    def scan() -> None:
        for job_id in pipeline.claim_due(_pipeline()):
            context().dispatcher.enqueue(taskqueue.JOB_POLL, job_id)
