"""The train queue: wake-ups for this worker's trainer, acknowledged early, each run under a lease."""

from __future__ import annotations

import logging

from celery import Celery

from service import taskqueue
from service.core.backends import local_run
from service.core.backends.base import Trained
from service.core.backends.local_run import LocalRunner
from service.core.jobs.stages import train
from workers.context import context
from workers.jobs import stage_context

log = logging.getLogger("tuneline.worker.training")

# Training runs for hours: past any visibility timeout, so the task is acknowledged when it starts
# (a redelivery would start a second run) and the lease in Tuneline's keys stands for it.
TRAIN_TIME_LIMIT_S = 14 * 24 * 3600


def _conclude(job_id: str, outcome: Trained) -> None:
    next_task = train.conclude(stage_context(), job_id, outcome)
    if next_task:
        context().dispatcher.enqueue(next_task, job_id)


def register(app: Celery) -> None:
    @app.task(
        name=taskqueue.TRAIN_RUN,
        acks_late=False,
        reject_on_worker_lost=False,
        time_limit=TRAIN_TIME_LIMIT_S,
        soft_time_limit=TRAIN_TIME_LIMIT_S - 60,
    )
    def train_(job_id: str | None = None) -> None:
        # A wake-up: the train queue decides which job runs. The job id a sender may give (the
        # pipeline hands one on, as do messages from before the queue) is ignored.
        ctx = context()
        claimed = LocalRunner(ctx.settings, ctx.store).serve(_conclude)
        log.info("trainer idle", extra={"trained": len(claimed)})

    @app.task(name=taskqueue.TRAIN_REAP)
    def reap() -> None:
        # Beat: put dead workers' jobs back in the queue, and keep trainers awake while jobs wait
        # (a lost or deleted wake-up message is replaced within local_run.WAKE_EVERY_S).
        ctx = context()
        if local_run.tend_queue(ctx.settings, ctx.store):
            ctx.dispatcher.enqueue(taskqueue.TRAIN_RUN)
