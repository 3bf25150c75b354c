"""Job pipeline tasks: ids in, one generic stage each, the next step enqueued by name.

The retry policy lives in ``service.core.jobs.retry``: a stage raises ``RetryLater`` when the
policy says "again later", and the task only turns that into a Celery countdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

from celery import Celery, Task

from service import taskqueue
from service.core.backends.registry import Backends
from service.core.completions import CompletionsContext
from service.core.evaluation import stage as evaluation
from service.core.jobs.retry import RetryLater
from service.core.jobs.stages import finalize, poll, prepare, submit, upload
from service.core.jobs.stages.common import StageContext
from workers.context import context

log = logging.getLogger("tuneline.worker.jobs")
EVALUATE_TIME_LIMIT_S = 3600  # a long test set; a killed run resumes from the stored rows

Step = Callable[[StageContext, str, int], object]


@cache
def backends() -> Backends:
    ctx = context()
    return Backends(ctx.settings, ctx.store, ctx.dispatcher)


def stage_context() -> StageContext:
    ctx = context()
    return StageContext(settings=ctx.settings, store=ctx.store, backends=backends())


def _completions() -> CompletionsContext:
    ctx = context()
    return CompletionsContext(
        settings=ctx.settings, store=ctx.store, dispatcher=ctx.dispatcher, backends=backends()
    )


def _next(task_name: object, job_id: str) -> None:
    if isinstance(task_name, str):
        context().dispatcher.enqueue(task_name, job_id)


def _run(task: Task, step: Step, job_id: str) -> None:
    """Run one stage; when the policy asks for another attempt, schedule it as a Celery retry."""
    try:
        result = step(stage_context(), job_id, task.request.retries)
    except RetryLater as exc:
        log.info("step will retry", extra={"job_id": job_id, "task": task.name, "delay": exc.delay})
        raise task.retry(countdown=exc.delay, max_retries=None) from None
    _next(result, job_id)


def register(app: Celery) -> None:
    @app.task(name=taskqueue.JOB_PREPARE, bind=True)
    def prepare_(self: Task, job_id: str) -> None:
        _run(self, prepare.run_prepare, job_id)

    @app.task(name=taskqueue.JOB_UPLOAD, bind=True)
    def upload_(self: Task, job_id: str) -> None:
        _run(self, upload.run_upload, job_id)

    @app.task(name=taskqueue.JOB_SUBMIT, bind=True)
    def submit_(self: Task, job_id: str) -> None:
        _run(self, submit.run_submit, job_id)

    @app.task(name=taskqueue.JOB_POLL)
    def poll_(job_id: str) -> None:
        _next(poll.run_poll(stage_context(), job_id), job_id)

    @app.task(name=taskqueue.JOB_POLL_BATCH)
    def poll_batch(*job_ids: str) -> None:
        poll.run_polls(stage_context(), list(job_ids), _next)

    @app.task(name=taskqueue.JOB_FINALIZE, bind=True)
    def finalize_(self: Task, job_id: str) -> None:
        _run(self, finalize.run_finalize, job_id)

    @app.task(
        name=taskqueue.JOB_EVALUATE,
        bind=True,
        time_limit=EVALUATE_TIME_LIMIT_S,
        soft_time_limit=EVALUATE_TIME_LIMIT_S - 60,
    )
    def evaluate(self: Task, job_id: str) -> None:
        try:
            evaluation.run_evaluate(_completions(), job_id, self.request.retries)
        except RetryLater as exc:
            raise self.retry(countdown=exc.delay, max_retries=None) from None

    @app.task(name=taskqueue.JOB_CANCEL, bind=True)
    def cancel(self: Task, job_id: str) -> None:
        _run(self, submit.run_cancel, job_id)

    @app.task(name=taskqueue.POLL_SCAN)
    def scan() -> None:
        for batch in poll.claim_due_batches(stage_context()):
            context().dispatcher.enqueue(taskqueue.JOB_POLL_BATCH, *batch)
