"""The ``submitting`` stage: exactly one paid create per Tuneline job; and the provider-side cancel.

"Submit started" is persisted before the create: when an attempt ends without knowing whether
the create landed (a timeout, a 5xx), the next attempt looks for the provider job first.
"""

from __future__ import annotations

from service.core.backends.base import BackendError
from service.core.backends.remote import remote_state
from service.core.jobs import lifecycle, record, retry, states
from service.core.jobs.record import Job
from service.core.jobs.stages.common import StageContext, enter, run_stage
from service.core.store import jobs as repo

STAGE = "submitting"


def run_submit(ctx: StageContext, job_id: str, attempt: int = 0) -> str | None:
    job = record.load(ctx.store, job_id)
    if job is None or (job.provider_job_id and job.stage != STAGE):
        return None
    if job.status == states.CANCELLED and remote_state(job).submit_started:
        run_cancel(ctx, job_id, attempt)  # a create may have landed before the cancel
        return None
    job = enter(ctx, job_id, STAGE)
    if job is None:
        return None
    return run_stage(ctx, job, STAGE, lambda j: _submit(ctx, j), retry.SUBMIT, attempt)


def _submit(ctx: StageContext, job: Job) -> str | None:
    backend = ctx.backend(job)
    found = backend.find(job) if remote_state(job).submit_started else None
    if found is None:

        def started(j: Job) -> None:
            remote_state(j).submit_started = True

        record.modify(ctx.store, job.id, started)  # persisted BEFORE the create
        remote_state(job).submit_started = True
        found = backend.create(job)
        message = f"Created {job.provider} job {found.id}"
    else:
        message = f"Found existing {job.provider} job {found.id} after an interrupted create"

    first_poll = ctx.clock.now() + ctx.settings.poll_interval_s

    def submitted(j: Job) -> None:
        j.provider_job_id, j.provider_status = found.id, found.status
        remote_state(j).poll_due_at = first_poll

    # The provider job and the move on are one write: a worker killed between two writes left a
    # job that had its provider job but was still ``submitting``, which no later attempt moved.
    moved = lifecycle.try_transition(
        ctx.store, job.id, states.VALIDATING, "provider_validating", message, apply=submitted
    )
    if moved is None:  # moved on meanwhile: a twin attempt, or a cancel
        current = record.load(ctx.store, job.id)
        if current is not None and current.status == states.CANCELLED:
            # Recorded even so: the cancel must reach the provider job.
            current = record.modify(ctx.store, job.id, submitted) if not current.provider_job_id else current
            if current is not None:
                _cancel(ctx, current)
        return None
    repo.schedule_poll(ctx.store, job.id, first_poll)
    return None


def _cancel(ctx: StageContext, job: Job) -> None:
    target = ctx.backend(job).cancel(job)
    if target:

        def cancelled(j: Job) -> None:
            j.provider_job_id = target

        lifecycle.record_event(ctx.store, job.id, f"Cancelled provider job {target}", apply=cancelled)


def run_cancel(ctx: StageContext, job_id: str, attempt: int = 0) -> None:
    """Cancel the provider side of a cancelled job; a failure that will not pass is noted, not raised."""
    job = record.load(ctx.store, job_id)
    if job is None or job.status != states.CANCELLED:
        return
    try:
        _cancel(ctx, job)
    except BackendError as exc:
        decision = retry.decide(retry.CANCEL, exc, attempt, ctx.jitter())
        if decision.retry:
            raise retry.RetryLater(decision.delay, decision.message) from exc
        lifecycle.record_event(ctx.store, job_id, f"Provider cancel failed: {decision.message}", level="warn")
