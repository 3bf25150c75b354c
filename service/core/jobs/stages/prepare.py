"""The ``preparing`` stage: check and convert the job's files for its backend's model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.core import files, tasknames
from service.core.backends.base import Backend, Next
from service.core.datasets import PrepareOptions, prepare_file
from service.core.jobs import lifecycle, states
from service.core.jobs.record import Job
from service.core.jobs.seeds import DEFAULT_SEED
from service.core.jobs.stages.common import StageContext, enter, fail_job, run_stage, watch
from service.settings import Settings

STAGE = "preparing"
# An evaluate-only job trains nothing: its prepared test set goes straight to the evaluation.
EVALUATE_ONLY = Next(states.RUNNING, "evaluating", tasknames.JOB_EVALUATE)


def after_prepare(backend: Backend, job: Job) -> Next:
    """Where a prepared job goes: its backend's next stage, or its evaluation when it trains nothing."""
    return EVALUATE_ONLY if job.evaluated_model else backend.after_prepare()


def prepared_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "prepared" / job_id


def run_prepare(ctx: StageContext, job_id: str, attempt: int = 0) -> str | None:
    """Prepare the job's files; next: what its backend says follows preparation."""
    job = enter(ctx, job_id, STAGE)
    if job is None:
        return None
    return run_stage(ctx, job, STAGE, lambda j: _prepare(ctx, j), attempt=attempt)


def method_options(job: Job) -> dict[str, Any]:
    """What preparation checks for the job's method: its format, and a reinforcement job's grader
    (every row must have the fields it reads) and knobs (the estimate)."""
    method = job.method or {}
    kind = method.get("type") or "supervised"
    detail = method.get(kind) or {}
    if kind != "reinforcement":
        return {"method": kind}
    return {
        "method": kind,
        "grader": detail.get("grader"),
        "hyperparameters": {**job.hyperparameters, **(detail.get("hyperparameters") or {})},
    }


def _prepare(ctx: StageContext, job: Job) -> str | None:
    backend = ctx.backend(job)
    prep = job.prepare or {}
    split = prep.get("split") or {}
    prepare_model = backend.preparation_model(job)
    by_method = method_options(job)
    options = PrepareOptions(
        model=prepare_model,
        system_prompt=prep.get("system_prompt"),
        skip_invalid_lines=bool(prep.get("skip_invalid_lines", False)),
        dedupe=prep.get("dedupe", True),
        split_validation=0.0 if job.validation_file else float(split.get("validation", 0.0)),
        split_test=0.0 if job.test_file else float(split.get("test", 0.0)),
        seed=int(split.get("seed", DEFAULT_SEED if job.seed is None else job.seed)),
        **by_method,
    )
    out = prepared_dir(ctx.settings, job.id)
    report = prepare_file(files.blob_path(ctx.settings.data_dir, job.training_file), options, out / "train")
    if not report.usable or "train" not in report.outputs:
        fail_job(
            ctx.store,
            job.id,
            "invalid_training_file",
            f"training file {job.training_file} failed validation: {report.status_details}",
            "training_file",
        )
        return None
    prepared = {"train": str(report.outputs["train"])}
    for split_name in ("validation", "test"):
        if split_name in report.outputs:
            prepared[split_name] = str(report.outputs[split_name])
    for name, file_id in (("validation", job.validation_file), ("test", job.test_file)):
        if not file_id:
            continue
        side = prepare_file(
            files.blob_path(ctx.settings.data_dir, file_id),
            PrepareOptions(
                model=prepare_model,
                system_prompt=prep.get("system_prompt"),
                dedupe=prep.get("dedupe", True),
                **by_method,
            ),
            out / name,
        )
        if not side.usable or "train" not in side.outputs:
            field = f"{name}_file"
            fail_job(
                ctx.store,
                job.id,
                f"invalid_{name}_file",
                f"{field} {file_id} failed validation: {side.status_details}",
                field,
            )
            return None
        prepared[name] = str(side.outputs["train"])
    after = after_prepare(backend, job)
    if after is EVALUATE_ONLY and "test" not in prepared:
        fail_job(
            ctx.store,
            job.id,
            "empty_test_set",
            f"preparing training file {job.training_file} left no held-out examples to evaluate on",
            "prepare.split.test",
        )
        return None
    counts = report.to_dict().get("counts", {})
    # The stop sequence the completion-style rows end with, so evaluation can strip and send it.
    stop = (report.prepared or {}).get("stop")

    def keep(j: Job) -> None:
        j.prepared, j.prepared_stop = prepared, stop

    lifecycle.transition(
        ctx.store,
        job.id,
        after.status,
        after.stage,
        f"Prepared {counts.get('train', counts.get('kept'))} training examples"
        + (f", {counts.get('validation')} validation" if counts.get("validation") else "")
        + (f", {counts.get('test')} test" if counts.get("test") else ""),
        apply=keep,
    )
    if after is EVALUATE_ONLY:
        watch(ctx, job.id)  # the watchdog re-runs a lost evaluation task
        return after.task
    return backend.start(job)
