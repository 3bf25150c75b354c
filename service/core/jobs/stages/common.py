"""What every stage shares: its context, entering a stage, failing a job, the watchdog interval."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from service.core import tasknames
from service.core.backends.base import Backend, BackendError
from service.core.clock import Clock, SystemClock
from service.core.jobs import lifecycle, record, retry, states
from service.core.jobs.record import Job
from service.core.store import Store
from service.core.store import jobs as repo
from service.settings import Settings

WATCHDOG_S = 60.0  # a worker-driven stage older than this gets its task enqueued again

# Stages a worker task drives, and the task that serves each (the watchdog re-enqueues it).
# Not ``train_queued``: a job waiting for its executor is held by the backend (the local train
# queue, which beat keeps awake); the watchdog only hands it over once (``stages.poll``).
STAGE_TASKS = {
    "preparing": tasknames.JOB_PREPARE,
    "uploading": tasknames.JOB_UPLOAD,
    "submitting": tasknames.JOB_SUBMIT,
    "finalizing": tasknames.JOB_FINALIZE,
    "evaluating": tasknames.JOB_EVALUATE,
}


@dataclass
class StageContext:
    settings: Settings
    store: Store
    backends: Callable[[str], Backend]
    clock: Clock = field(default_factory=SystemClock)
    jitter: Callable[[], float] = random.random  # in [0, 1): spreads retry delays

    def backend(self, job: Job) -> Backend:
        return self.backends(job.provider)


def fail_job(store: Store, job_id: str, code: str, message: str, param: str | None = None) -> None:
    """Fail the job with ``error`` set, unless it already ended."""

    def error(job: Job) -> None:
        job.error = {"code": code, "message": message, "param": param}

    lifecycle.try_transition(
        store, job_id, states.FAILED, "done", f"Job failed: {message}", level="error", apply=error
    )


def guard_redelivery(store: Store, job_id: str, stage: str) -> bool:
    """Count deliveries of this stage; False (and the job failed) when it keeps crashing workers."""
    attempts = retry.count_delivery(store, job_id, stage)
    if attempts > retry.MAX_DELIVERIES:
        fail_job(
            store, job_id, "stage_crashed", f"stage {stage} was interrupted {attempts - 1} times; giving up"
        )
        return False
    return True


def enter(ctx: StageContext, job_id: str, stage: str) -> Job | None:
    """The job if this step should run: it is in ``stage`` and the stage is not crash-looping."""
    job = record.load(ctx.store, job_id)
    if job is None or job.status in states.TERMINAL or job.stage != stage:
        return None
    return job if guard_redelivery(ctx.store, job_id, stage) else None


def run_stage(
    ctx: StageContext,
    job: Job,
    counter: str,
    body: Callable[[Job], str | None],
    policy: retry.Policy = retry.STAGE,
    attempt: int = 0,
) -> str | None:
    """Run one stage's body for an entered job under the retry policy; the next task, if any.

    The stage's delivery counter is reset here, once the body returned or failed in a way the
    policy handles (a retry is a new delivery, not a crash). A classified error is retried
    (``RetryLater``) or fails the job with its code.
    """
    outcome: str | BackendError | None
    try:
        outcome = body(job)
    except BackendError as exc:
        outcome = exc
    retry.reset(ctx.store, job.id, counter)
    if not isinstance(outcome, BackendError):
        return outcome
    decision = retry.decide(policy, outcome, attempt, ctx.jitter())
    if decision.retry:
        raise retry.RetryLater(decision.delay, decision.message) from outcome
    fail_job(ctx.store, job.id, decision.code, decision.message)
    return None


def watch(ctx: StageContext, job_id: str) -> None:
    """Have the watchdog look at the job after ``WATCHDOG_S`` (it re-runs a lost stage task)."""
    repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + WATCHDOG_S)
