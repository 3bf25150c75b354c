"""The ``train`` stage: a job whose backend runs the training itself (``train_queued``, ``training``)."""

from __future__ import annotations

from service.core import tasknames
from service.core.backends.base import Trained
from service.core.jobs import lifecycle, record, states
from service.core.jobs.record import Job
from service.core.jobs.stages.common import StageContext, fail_job, watch

STAGES = ("train_queued", "training")


def run_train(ctx: StageContext, job_id: str) -> str | None:
    """Train the job on its backend's executor; next: finalize. Safe to run twice."""
    job = record.load(ctx.store, job_id)
    if job is None or job.status in states.TERMINAL or job.stage not in STAGES:
        return None
    outcome = ctx.backend(job).train(job)
    if outcome is None:
        return None
    return conclude(ctx, job_id, outcome)


def conclude(ctx: StageContext, job_id: str, outcome: Trained) -> str | None:
    """Record how a training run ended: failed, or on to finalize (the task returned)."""
    # The restart counter (bumped by the backend's lease reaper) needs no reset: the job leaves
    # the training stage for good here, and the counter expires on its own.
    if outcome.error is not None:
        fail_job(ctx.store, job_id, outcome.error["code"], outcome.error["message"])
        return None

    def trained(job: Job) -> None:
        job.trained_tokens = outcome.trained_tokens
        if outcome.apply is not None:
            outcome.apply(job)

    # The watchdog first: it re-runs a finalize lost after the move, and a worker killed between
    # the move and the hand-on would otherwise leave a finalizing job nothing looks at (a job
    # training under a lease has no poll entry, and a redelivered train task ignores it).
    watch(ctx, job_id)
    moved = lifecycle.try_transition(
        ctx.store, job_id, states.RUNNING, "finalizing", outcome.message, apply=trained
    )
    if moved is None:
        return None
    return tasknames.JOB_FINALIZE
