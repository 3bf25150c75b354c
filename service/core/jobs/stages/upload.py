"""The ``uploading`` stage: the backend uploads the prepared files; next: submit."""

from __future__ import annotations

from service.core import tasknames
from service.core.backends.remote import remote_state
from service.core.jobs import lifecycle, states
from service.core.jobs.record import Job
from service.core.jobs.stages.common import StageContext, enter, run_stage

STAGE = "uploading"


def run_upload(ctx: StageContext, job_id: str, attempt: int = 0) -> str | None:
    job = enter(ctx, job_id, STAGE)
    if job is None:
        return None
    return run_stage(ctx, job, STAGE, lambda j: _upload(ctx, j), attempt=attempt)


def _upload(ctx: StageContext, job: Job) -> str | None:
    training, validation = ctx.backend(job).upload(job)

    def uploaded(j: Job) -> None:
        state = remote_state(j)
        state.training_file, state.validation_file = training, validation

    lifecycle.transition(
        ctx.store,
        job.id,
        states.VALIDATING,
        "submitting",
        f"Uploaded training data to {job.provider}",
        apply=uploaded,
    )
    return tasknames.JOB_SUBMIT
