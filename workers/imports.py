"""Import tasks: one bounded step of an account import per delivery, the next enqueued by name."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery, Task

from service import taskqueue
from service.core.imports import distill, run
from service.core.imports.distill import DistillContext
from service.core.imports.usecases import ImportsContext
from service.core.jobs.retry import RetryLater
from service.core.secrets_box import box_for
from workers.context import context
from workers.jobs import backends

log = logging.getLogger("tuneline.worker.imports")


def imports_context() -> ImportsContext:
    ctx = context()
    return ImportsContext(
        settings=ctx.settings,
        store=ctx.store,
        dispatcher=ctx.dispatcher,
        box=box_for(ctx.settings.secret_key, ctx.settings.env),
    )


def distill_context() -> DistillContext:
    ctx = context()
    return DistillContext(
        settings=ctx.settings, store=ctx.store, dispatcher=ctx.dispatcher, backends=backends()
    )


def _step(task: Task, name: str, what: str, import_id: str, step: Callable[[int], bool]) -> None:
    """Run one bounded step; a step that must wait retries later, one that left work enqueues the next."""
    try:
        more = step(task.request.retries)
    except RetryLater as exc:
        log.info(f"{what} step will retry", extra={"import_id": import_id, "delay": exc.delay})
        raise task.retry(countdown=exc.delay, max_retries=None) from None
    if more:
        context().dispatcher.enqueue(name, import_id)


def register(app: Celery) -> None:
    @app.task(name=taskqueue.IMPORT_RUN, bind=True)
    def run_(self: Task, import_id: str) -> None:
        _step(
            self,
            taskqueue.IMPORT_RUN,
            "import",
            import_id,
            lambda attempt: run.run_import(imports_context(), import_id, attempt),
        )

    @app.task(name=taskqueue.IMPORT_DISTILL, bind=True)
    def distill_(self: Task, import_id: str) -> None:
        _step(
            self,
            taskqueue.IMPORT_DISTILL,
            "distill",
            import_id,
            lambda attempt: distill.run_distill(distill_context(), import_id, attempt),
        )
