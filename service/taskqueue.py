"""The Celery app object and task names; the API enqueues by name and never imports workers."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

# Task names live in the framework-free core (which enqueues them); re-exported for workers.
from service.core.tasknames import (
    IMPORT_DISTILL,
    IMPORT_RUN,
    INFER_COMPLETE,
    INFER_EXPORT,
    INFER_SCORE,
    JOB_CANCEL,
    JOB_EVALUATE,
    JOB_FINALIZE,
    JOB_POLL,
    JOB_POLL_BATCH,
    JOB_PREPARE,
    JOB_SUBMIT,
    JOB_UPLOAD,
    POLL_SCAN,
    PREPARE_FILE,
    PREPARE_SCAN,
    SWEEP,
    TRAIN_REAP,
    TRAIN_RUN,
    WEBHOOK_DELIVER,
    WEBHOOK_SCAN,
)
from service.settings import Settings

QUEUES = ("datasets", "provider", "poll", "webhooks", "maintenance", "train", "infer")
ROUTES = {
    PREPARE_FILE: "datasets",
    # A short look at the watchdog's set: beside the polls, not behind long preparations.
    PREPARE_SCAN: "poll",
    JOB_PREPARE: "datasets",
    JOB_UPLOAD: "provider",
    JOB_SUBMIT: "provider",
    JOB_FINALIZE: "provider",
    JOB_CANCEL: "provider",
    # Evaluation mostly waits on provider (or infer-queue) answers; it holds its own lease.
    JOB_EVALUATE: "provider",
    JOB_POLL: "poll",
    JOB_POLL_BATCH: "poll",
    POLL_SCAN: "poll",
    WEBHOOK_DELIVER: "webhooks",
    WEBHOOK_SCAN: "webhooks",
    SWEEP: "maintenance",
    # Local trainer: one job per device on `train` (workers with the train extra, concurrency 1);
    # the lease reaper is a short task beside the polls.
    TRAIN_RUN: "train",
    TRAIN_REAP: "poll",
    INFER_COMPLETE: "infer",
    INFER_SCORE: "infer",
    # An import reads a provider account: short steps that wait on the provider, like uploads.
    IMPORT_RUN: "provider",
    # A distillation waits on the original model's answers, a step at a time like an import.
    IMPORT_DISTILL: "provider",
    # Exports load the model like inference does: workers with the train extra, beside completions.
    INFER_EXPORT: "infer",
}

SCAN_EVERY_S = 1.0
PREPARE_SCAN_EVERY_S = 10.0
TRAIN_REAP_EVERY_S = 2.0


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app; creating it opens no connection."""
    app = Celery("tuneline", broker=settings.effective_broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=900,
        task_soft_time_limit=840,
        task_default_queue="datasets",
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
        # kombu scans for unacked messages of dead workers every 10 s but, by default, acts on
        # only every 10th scan; throttle 1 brings a killed worker's tasks back within the
        # visibility timeout + 10 s instead of + 100 s (the scan is one ZRANGE under a mutex).
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        beat_schedule={
            "poll-scan": {"task": POLL_SCAN, "schedule": SCAN_EVERY_S},
            "webhook-scan": {"task": WEBHOOK_SCAN, "schedule": SCAN_EVERY_S},
            "prepare-scan": {"task": PREPARE_SCAN, "schedule": PREPARE_SCAN_EVERY_S},
            "sweep": {"task": SWEEP, "schedule": 600.0},
            "train-reap": {"task": TRAIN_REAP, "schedule": TRAIN_REAP_EVERY_S},
        },
    )
    return app


class CeleryDispatcher:
    """The Dispatcher port over Celery: send by name, id-only arguments."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue(self, task_name: str, *args: str, queue: str | None = None) -> None:
        self.app.send_task(task_name, args=list(args), queue=queue or ROUTES.get(task_name))
