"""Housekeeping: remove orphaned upload bytes left by crashes."""

from __future__ import annotations

import logging

from celery import Celery

from service import taskqueue
from service.core import files
from workers.context import context

log = logging.getLogger("tuneline.worker.maintenance")


def sweep() -> None:
    ctx = context()
    removed = files.sweep_orphans(ctx.store, ctx.settings.data_dir)
    if removed:
        log.info("removed orphaned blobs", extra={"count": removed})


def register(app: Celery) -> None:
    app.task(name=taskqueue.SWEEP)(sweep)
