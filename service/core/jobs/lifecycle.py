"""The one function that changes a job's state, and event recording (DESIGN §5).

Every transition appends an event, and writes any webhook deliveries it triggers into the
outbox, in the same Redis transaction as the state change. Field changes ride along as typed
``apply`` functions on the record (``record.Apply``), never as loose keys.
"""

from __future__ import annotations

import time
from typing import Any

from service.core.errors import NotFound
from service.core.jobs import states
from service.core.jobs.record import Apply, Job, write
from service.core.jobs.views import public_job
from service.core.store import Store, stats
from service.core.store import jobs as repo
from service.core.store.base import Pipeline
from service.core.webhooks import signing
from service.core.webhooks.outbox import queue_webhook

WEBHOOK_TYPES = {
    states.SUCCEEDED: signing.EVENT_SUCCEEDED,
    states.FAILED: signing.EVENT_FAILED,
    states.CANCELLED: signing.EVENT_CANCELLED,
    states.RUNNING: signing.EVENT_RUNNING,
    states.PAUSED: signing.EVENT_PAUSED,
}


def _event(
    job: Job,
    message: str,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    job.event_count += 1
    return {
        "id": repo.event_id(job.id, job.event_count),
        "object": "fine_tuning.job.event",
        "created_at": int(now or time.time()),
        "level": level,
        "message": message,
        "type": type_,
        "data": data or {},
    }


def transition(
    store: Store,
    job_id: str,
    status: str,
    stage: str,
    message: str,
    *,
    level: str = "info",
    apply: Apply | None = None,
    data: dict[str, Any] | None = None,
    also_webhooks: tuple[str, ...] = (),
) -> Job:
    """Move the job to (status, stage); a repeat of the current state is a no-op.

    ``also_webhooks`` are event types queued after the status's own (e.g. ``evaluated`` after
    ``succeeded``), in the same transaction. Raises IllegalTransition for a move the state
    machine forbids (e.g. out of a terminal state).
    """

    def change(job: Job, pipe: Pipeline) -> bool:
        if not states.check((job.status, job.stage), (status, stage)):
            return False
        old_status, old_stage = job.status, job.stage
        now = time.time()
        if apply is not None:
            apply(job)
        job.status, job.stage, job.updated_at = status, stage, int(now)
        job.stage_changed_at = now
        if status in states.TERMINAL:
            job.finished_at = int(now)
            repo.unschedule_poll(store, job.id, pipe)
        event = _event(job, message, level, data=data, now=now)
        repo.queue_event(pipe, job.id, event)
        doc = job.to_dict()
        stats.count_move(pipe, doc, old_status, old_stage)
        webhook_type = WEBHOOK_TYPES.get(status)
        if webhook_type and status != old_status:  # e.g. not again for running/finalizing
            queue_webhook(pipe, doc, webhook_type, now, public_job(doc))
        if old_status == states.PAUSED and status not in states.TERMINAL:
            queue_webhook(pipe, doc, signing.EVENT_RESUMED, now, public_job(doc))
        for n, extra in enumerate(also_webhooks, 1):
            queue_webhook(pipe, doc, extra, now + n / 1000, public_job(doc))
        return True

    job = write(store, job_id, change)
    if job is None:
        raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
    return job


def try_transition(
    store: Store, job_id: str, status: str, stage: str, message: str, **kwargs: Any
) -> Job | None:
    """``transition``, or None when the job has already moved past (a cancel or a twin step won)."""
    try:
        return transition(store, job_id, status, stage, message, **kwargs)
    except states.IllegalTransition:
        return None


def record_event(
    store: Store,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type_: str = "message",
    data: dict[str, Any] | None = None,
    apply: Apply | None = None,
    webhook: tuple[str, dict[str, Any]] | None = None,
) -> Job | None:
    """Append an event (and an optional typed change) without changing state.

    ``webhook`` is ``(event type, extra payload fields)``: a delivery queued in the same MULTI
    when the job's webhook subscribes to that type (e.g. ``fine_tuning.job.checkpoint``); the
    payload is the job snapshot plus the extra fields.
    """

    def change(job: Job, pipe: Pipeline) -> bool:
        now = time.time()
        if apply is not None:
            apply(job)
        job.updated_at = int(now)
        repo.queue_event(pipe, job.id, _event(job, message, level, type_, data, now))
        if webhook is not None:
            webhook_type, extra = webhook
            doc = job.to_dict()
            queue_webhook(pipe, doc, webhook_type, now, {**public_job(doc), **extra})
        return True

    return write(store, job_id, change)


def record_checkpoint(store: Store, job_id: str, checkpoint: dict[str, Any]) -> bool:
    """Keep a new checkpoint, with its event and the opt-in ``fine_tuning.job.checkpoint`` webhook.

    Returns False when a checkpoint of that step is already stored. The event (and webhook) is
    written before the checkpoint: a crash in between repeats them on the next sync (webhooks
    are at-least-once) instead of losing them.
    """
    step = int(checkpoint["step_number"])
    if repo.has_checkpoint(store, job_id, step):
        return False
    record_event(
        store,
        job_id,
        f"Checkpoint created at step {step}",
        data={"step": step, "checkpoint": checkpoint["id"]},
        webhook=(signing.EVENT_CHECKPOINT, {"checkpoint": checkpoint}),
    )
    return repo.put_checkpoint(store, job_id, checkpoint)
