"""The train queue: one training job per task, acknowledged early and held by a lease."""

from __future__ import annotations

import logging

from celery import Celery, Task

from service import taskqueue
from service.core.backends import local_run
from service.core.backends.local_run import DeviceBusy
from service.core.jobs.stages import train
from workers.context import context
from workers.jobs import stage_context

log = logging.getLogger("tuneline.worker.training")

# Training runs for hours: past any visibility timeout, so the task is acknowledged when it starts
# (a redelivery would start a second run) and the lease in Tuneline's keys stands for it.
TRAIN_TIME_LIMIT_S = 14 * 24 * 3600
DEVICE_BUSY_RETRY_S = 10.0  # under local_run.WAITING_TTL_S: a waiting task keeps the watchdog away


def register(app: Celery) -> None:
    @app.task(
        name=taskqueue.TRAIN_RUN,
        bind=True,
        acks_late=False,
        reject_on_worker_lost=False,
        time_limit=TRAIN_TIME_LIMIT_S,
        soft_time_limit=TRAIN_TIME_LIMIT_S - 60,
    )
    def train_(self: Task, job_id: str) -> None:
        try:
            next_task = train.run_train(stage_context(), job_id)
        except DeviceBusy:
            wait = min(DEVICE_BUSY_RETRY_S, float(context().settings.train_lease_s))
            log.info("device busy; job will come back", extra={"job_id": job_id, "delay": wait})
            raise self.retry(countdown=wait, max_retries=None) from None
        if next_task:
            context().dispatcher.enqueue(next_task, job_id)

    @app.task(name=taskqueue.TRAIN_REAP)
    def reap() -> None:
        ctx = context()
        for job_id in local_run.reap_leases(ctx.settings, ctx.store):
            ctx.dispatcher.enqueue(taskqueue.TRAIN_RUN, job_id)
