"""The ``finalizing`` stage: keep the result metrics and name the model; next: evaluate or done."""

from __future__ import annotations

import hashlib
import time

from service.core import files, tasknames
from service.core.jobs import lifecycle, metrics, states
from service.core.jobs.naming import fine_tuned_model_name
from service.core.jobs.record import Job
from service.core.jobs.stages.common import StageContext, enter, run_stage, watch
from service.core.store import jobs as repo

STAGE = "finalizing"


def run_finalize(ctx: StageContext, job_id: str, attempt: int = 0) -> str | None:
    job = enter(ctx, job_id, STAGE)
    if job is None:
        return None
    return run_stage(ctx, job, STAGE, lambda j: _finalize(ctx, j), attempt=attempt)


def _finalize(ctx: StageContext, job: Job) -> str | None:
    finalized = ctx.backend(job).finalize(job)
    result_files: list[str] = []
    for rows in finalized.metrics:
        if rows:
            repo.put_metrics(ctx.store, job.id, rows)
        result_files.append(_store_result_file(ctx, job, rows))
    name = fine_tuned_model_name(job.model, job.tenant, job.suffix, job.id)
    return finish_or_evaluate(ctx, job, name, result_files)


def finish_or_evaluate(ctx: StageContext, job: Job, name: str, result_files: list[str]) -> str | None:
    """Succeed the trained job, or move it to ``evaluating`` when it has a held-out test set.

    Returns the next task to enqueue (the evaluation), or None.
    """

    def named(j: Job) -> None:
        j.fine_tuned_model, j.result_files = name, result_files

    if (job.prepared or {}).get("test"):
        moved = lifecycle.try_transition(
            ctx.store,
            job.id,
            states.RUNNING,
            "evaluating",
            f"New fine-tuned model created: {name}; evaluating it on the held-out test set",
            apply=named,
        )
        if moved is None:
            return None
        watch(ctx, job.id)  # watchdog for evaluate
        return tasknames.JOB_EVALUATE
    message = f"The job has successfully completed: {name}"
    lifecycle.try_transition(ctx.store, job.id, states.SUCCEEDED, "done", message, apply=named)
    return None


def _store_result_file(ctx: StageContext, job: Job, rows: list[dict[str, object]]) -> str:
    """Keep the metrics as a tenant-visible result file (purpose ``fine-tune-results``)."""
    payload = metrics.to_csv(rows, metrics.columns_for(job.method)).encode()
    file_id = "file-" + hashlib.sha256(f"{job.id}:results".encode()).hexdigest()[:24]
    path = files.blob_path(ctx.settings.data_dir, file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    stored = files.FileRecord(
        id=file_id,
        tenant=job.tenant,
        bytes=len(payload),
        created_at=int(time.time()),
        filename=f"{job.id}-results.csv",
        purpose="fine-tune-results",
        sha256=hashlib.sha256(payload).hexdigest(),
        status="processed",
    )
    files.save_record(ctx.store, stored)
    return file_id
