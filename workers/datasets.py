"""Dataset tasks: run the preparation engine on an uploaded file."""

from __future__ import annotations

import logging
import time

from celery import Celery

from service import taskqueue
from service.core import preparation
from workers.context import context

log = logging.getLogger("tuneline.worker.datasets")


def prepare_file(file_id: str) -> None:
    ctx = context()
    preparation.prepare_uploaded_file(ctx.store, ctx.settings.data_dir, file_id)


def scan() -> None:
    ctx = context()
    preparation.requeue_stalled(ctx.store, ctx.dispatcher, time.time())


def register(app: Celery) -> None:
    app.task(name=taskqueue.PREPARE_FILE, max_retries=3)(prepare_file)
    app.task(name=taskqueue.PREPARE_SCAN)(scan)
