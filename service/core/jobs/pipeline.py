"""Use cases run by workers, one per stage: prepare → upload → submit → poll → finalize.

Each step loads the job, returns quietly when the job is no longer in the stage it serves
(a duplicate delivery, or a cancel), and hands the next step's task name back to its caller.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core import files, ids, tasknames
from service.core.clock import Clock, SystemClock
from service.core.datasets import PrepareOptions, prepare_file
from service.core.jobs import lifecycle, metrics, states
from service.core.jobs.usecases import fine_tuned_model_name
from service.core.providers import local
from service.core.providers.base import CreateJobRequest, Provider, ProviderError
from service.core.store import Store, ratelimit
from service.core.store import jobs as repo
from service.settings import Settings

log = logging.getLogger("tuneline.pipeline")


MAX_DELIVERIES = 5  # a stage whose task keeps dying this often fails the job instead of looping
WATCHDOG_S = 60.0  # a worker-driven stage older than this gets its task enqueued again
POLL_LEASE_S = 30.0
POLL_LOCK_S = 90  # longer than one poll's provider calls; bounds recovery after a killed worker
MAX_POLL_INTERVAL_S = 60.0

STAGE_TASKS = {
    "preparing": tasknames.JOB_PREPARE,
    "uploading": tasknames.JOB_UPLOAD,
    "submitting": tasknames.JOB_SUBMIT,
    "finalizing": tasknames.JOB_FINALIZE,
    "evaluating": tasknames.JOB_EVALUATE,
}

PROVIDER_STATES = {
    "validating_files": (states.VALIDATING, "provider_validating"),
    "queued": (states.QUEUED, "provider_queued"),
    "running": (states.RUNNING, "training"),
}


@dataclass
class PipelineContext:
    settings: Settings
    store: Store
    providers: Callable[[str], Provider]
    clock: Clock = field(default_factory=SystemClock)


class Retry(Exception):
    """The step should run again after ``delay`` seconds (a transient provider error)."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


def _enter(ctx: PipelineContext, job_id: str, stage: str) -> dict[str, Any] | None:
    """The job if this step should run: it is in ``stage`` and the stage is not crash-looping."""
    job = repo.load(ctx.store, job_id)
    if job is None or job["status"] in states.TERMINAL or job["stage"] != stage:
        return None
    return job if guard_redelivery(ctx, job_id, stage) else None


def fail(ctx: PipelineContext, job_id: str, code: str, message: str, param: str | None = None) -> None:
    fail_job(ctx.store, job_id, code, message, param)


def fail_job(store: Store, job_id: str, code: str, message: str, param: str | None = None) -> None:
    """Fail the job with ``error`` set, unless it already ended."""
    lifecycle.try_transition(
        store,
        job_id,
        states.FAILED,
        "done",
        f"Job failed: {message}",
        level="error",
        updates={"error": {"code": code, "message": message, "param": param}},
    )


def guard_redelivery(ctx: PipelineContext, job_id: str, stage: str) -> bool:
    """Count deliveries of this stage; False (and the job failed) when it keeps crashing workers."""
    attempts = repo.bump_attempts(ctx.store, job_id, stage)
    if attempts > MAX_DELIVERIES:
        fail(ctx, job_id, "stage_crashed", f"stage {stage} was interrupted {attempts - 1} times; giving up")
        return False
    return True


def _handle_provider_error(ctx: PipelineContext, job_id: str, exc: ProviderError, attempt: int) -> None:
    if exc.retryable and attempt < 8:
        delay = exc.retry_after if exc.retry_after is not None else min(2.0**attempt, 60.0)
        raise Retry(delay, exc.message) from exc
    fail(ctx, job_id, exc.code or "provider_error", exc.message)


# --- prepare -----------------------------------------------------------------------------------


def prepared_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "prepared" / job_id


def run_prepare(ctx: PipelineContext, job_id: str) -> str | None:
    """Prepare the job's files for its model and options; next: upload."""
    job = _enter(ctx, job_id, "preparing")
    if job is None:
        return None
    prep = job.get("prepare") or {}
    split = prep.get("split") or {}
    is_local = job["provider"] == local.NAME
    prepare_model = local.PREPARE_MODEL if is_local else job["model"]
    options = PrepareOptions(
        model=prepare_model,
        system_prompt=prep.get("system_prompt"),
        skip_invalid_lines=bool(prep.get("skip_invalid_lines", False)),
        dedupe=prep.get("dedupe", True),
        split_validation=0.0 if job.get("validation_file") else float(split.get("validation", 0.0)),
        split_test=0.0 if job.get("test_file") else float(split.get("test", 0.0)),
        seed=int(split.get("seed", job.get("seed") or 42)),
    )
    out = prepared_dir(ctx.settings, job_id)
    report = prepare_file(
        files.blob_path(ctx.settings.data_dir, job["training_file"]), options, out / "train"
    )
    if not report.usable or "train" not in report.outputs:
        fail(
            ctx,
            job_id,
            "invalid_training_file",
            f"training file {job['training_file']} failed validation: {report.status_details}",
            "training_file",
        )
        return None
    prepared = {"train": str(report.outputs["train"])}
    for split_name in ("validation", "test"):
        if split_name in report.outputs:
            prepared[split_name] = str(report.outputs[split_name])
    for name, file_key in (("validation", "validation_file"), ("test", "test_file")):
        if job.get(file_key):
            side = prepare_file(
                files.blob_path(ctx.settings.data_dir, job[file_key]),
                PrepareOptions(
                    model=prepare_model,
                    system_prompt=prep.get("system_prompt"),
                    dedupe=prep.get("dedupe", True),
                ),
                out / name,
            )
            if not side.usable or "train" not in side.outputs:
                fail(
                    ctx,
                    job_id,
                    "invalid_validation_file" if name == "validation" else "invalid_test_file",
                    f"{file_key} {job[file_key]} failed validation: {side.status_details}",
                    file_key,
                )
                return None
            prepared[name] = str(side.outputs["train"])
    counts = report.to_dict().get("counts", {})
    # Local jobs skip upload and submit: they wait in the train queue for a device.
    status, stage, next_task = (
        (states.QUEUED, "train_queued", tasknames.TRAIN_RUN)
        if is_local
        else (states.VALIDATING, "uploading", tasknames.JOB_UPLOAD)
    )
    lifecycle.transition(
        ctx.store,
        job_id,
        status,
        stage,
        f"Prepared {counts.get('train', counts.get('kept'))} training examples"
        + (f", {counts.get('validation')} validation" if counts.get("validation") else "")
        + (f", {counts.get('test')} test" if counts.get("test") else ""),
        # The stop sequence the completion-style rows end with, so evaluation can strip and send it.
        updates={"prepared": prepared, "prepared_stop": (report.prepared or {}).get("stop")},
    )
    repo.reset_attempts(ctx.store, job_id, "preparing")
    return next_task


# --- upload ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _upload_once(ctx: PipelineContext, provider: Provider, path: Path, filename: str) -> str:
    """Upload unless the same bytes were already uploaded to this provider account."""
    sha = _sha256(path)
    known = repo.provider_file_for(ctx.store, provider.account, sha)
    if known and provider.file_exists(known):
        return known
    file_id = provider.upload_file(path, filename)
    repo.remember_provider_file(ctx.store, provider.account, sha, file_id)
    return file_id


def run_upload(ctx: PipelineContext, job_id: str, attempt: int = 0) -> str | None:
    job = _enter(ctx, job_id, "uploading")
    if job is None:
        return None
    provider = ctx.providers(job["provider"])
    prepared = job["prepared"]
    try:
        training = _upload_once(ctx, provider, Path(prepared["train"]), f"{job_id}-train.jsonl")
        validation = None
        if prepared.get("validation"):
            validation = _upload_once(ctx, provider, Path(prepared["validation"]), f"{job_id}-valid.jsonl")
    except ProviderError as exc:
        repo.reset_attempts(ctx.store, job_id, "uploading")
        _handle_provider_error(ctx, job_id, exc, attempt)
        return None
    lifecycle.transition(
        ctx.store,
        job_id,
        states.VALIDATING,
        "submitting",
        f"Uploaded training data to {job['provider']}",
        updates={"provider_training_file": training, "provider_validation_file": validation},
    )
    repo.reset_attempts(ctx.store, job_id, "uploading")
    return tasknames.JOB_SUBMIT


# --- submit (exactly one paid create per Tuneline job) ------------------------------------------


def run_submit(ctx: PipelineContext, job_id: str, attempt: int = 0) -> str | None:
    job = repo.load(ctx.store, job_id)
    if job is None or job.get("provider_job_id"):
        return None
    if job["status"] in states.TERMINAL:
        if job["status"] == states.CANCELLED and job.get("submit_started"):
            _cancel_orphan(ctx, job)  # a create may have landed before the cancel
        return None
    if job["stage"] != "submitting" or not guard_redelivery(ctx, job_id, "submitting"):
        return None
    provider = ctx.providers(job["provider"])
    try:
        found = provider.find_job(job_id) if job.get("submit_started") else None
        if found is None:
            lifecycle.set_fields(ctx.store, job_id, submit_started=True)  # persisted BEFORE the create
            metadata = {**(job.get("metadata") or {}), "tuneline_job_id": job_id}
            extra = {"sandbox": job["sandbox"]} if job["provider"] == "sandbox" and job.get("sandbox") else {}
            found = provider.create_job(
                CreateJobRequest(
                    model=job["model"],
                    training_file=job["provider_training_file"],
                    validation_file=job.get("provider_validation_file"),
                    hyperparameters={k: v for k, v in job["hyperparameters"].items() if v != "auto"},
                    suffix=job.get("suffix"),
                    seed=job.get("seed"),
                    metadata=metadata,
                    method=job.get("method"),
                    extra_body=extra,
                )
            )
            message = f"Created {job['provider']} job {found.id}"
        else:
            message = f"Found existing {job['provider']} job {found.id} after an interrupted create"
    except ProviderError as exc:
        repo.reset_attempts(ctx.store, job_id, "submitting")
        if exc.ambiguous or exc.retryable:
            # Whatever happened, the next attempt looks before it creates.
            raise Retry(
                exc.retry_after if exc.retry_after is not None else min(2.0**attempt, 30.0), exc.message
            ) from exc
        fail(ctx, job_id, exc.code or "provider_error", exc.message)
        return None
    lifecycle.set_fields(ctx.store, job_id, provider_job_id=found.id, provider_status=found.status)
    try:
        lifecycle.transition(ctx.store, job_id, states.VALIDATING, "provider_validating", message)
    except states.IllegalTransition:
        current = repo.load(ctx.store, job_id)
        if current and current["status"] == states.CANCELLED:
            _cancel_orphan(ctx, current | {"provider_job_id": found.id})
        return None
    repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + ctx.settings.poll_interval_s)
    repo.reset_attempts(ctx.store, job_id, "submitting")
    return None


def _cancel_orphan(ctx: PipelineContext, job: dict[str, Any]) -> None:
    provider = ctx.providers(job["provider"])
    provider_job = provider.find_job(job["id"]) if not job.get("provider_job_id") else None
    target = job.get("provider_job_id") or (provider_job.id if provider_job else None)
    if target:
        provider.cancel(target)
        lifecycle.record_event(
            ctx.store, job["id"], f"Cancelled provider job {target}", updates={"provider_job_id": target}
        )


def run_cancel(ctx: PipelineContext, job_id: str, attempt: int = 0) -> None:
    """Cancel the provider job of a cancelled job (``attempt`` only keeps the steps' signature)."""
    job = repo.load(ctx.store, job_id)
    if job is None or job["status"] != states.CANCELLED:
        return
    try:
        _cancel_orphan(ctx, job)
    except ProviderError as exc:
        if exc.retryable:
            raise Retry(exc.retry_after or 5.0, exc.message) from exc
        lifecycle.record_event(ctx.store, job_id, f"Provider cancel failed: {exc.message}", level="warn")


# --- poll --------------------------------------------------------------------------------------


def claim_due(ctx: PipelineContext, limit: int = 200) -> list[str]:
    return repo.claim_due_polls(ctx.store, ctx.clock.now(), POLL_LEASE_S, limit)


def run_poll(ctx: PipelineContext, job_id: str) -> str | None:
    """Sync status, events, checkpoints and metrics from the provider; next: finalize or re-poll.

    The poll schedule doubles as the pipeline's watchdog: a job stuck in a worker-driven stage
    (its next task lost, e.g. to a broker outage between the transition and the enqueue) gets
    that stage's task enqueued again. Every stage task is safe to run twice.
    """
    job = repo.load(ctx.store, job_id)
    if job is None or job["status"] in states.TERMINAL:
        repo.unschedule_poll(ctx.store, job_id)
        return None
    if job["stage"] in STAGE_TASKS:
        now = ctx.clock.now()
        repo.schedule_poll(ctx.store, job_id, now + WATCHDOG_S)
        stalled = now - float(job.get("stage_changed_at") or now) >= WATCHDOG_S
        return STAGE_TASKS[job["stage"]] if stalled else None
    if not job.get("provider_job_id"):
        repo.unschedule_poll(ctx.store, job_id)
        return None
    token = secrets.token_hex(8)
    if not repo.acquire_lock(ctx.store, job_id, POLL_LOCK_S, token):
        # Another poll holds the lock (or a killed one did): look again soon.
        repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + ctx.settings.poll_interval_s)
        return None
    try:
        return _poll_locked(ctx, job)
    finally:
        repo.release_lock(ctx.store, job_id, token)


def _poll_locked(ctx: PipelineContext, job: dict[str, Any]) -> str | None:
    job_id = job["id"]
    provider = ctx.providers(job["provider"])
    base = ctx.settings.poll_interval_s
    now = ctx.clock.now()
    wait = ratelimit.take(
        ctx.store, provider.account, ctx.settings.poll_rate_per_s, ctx.settings.poll_burst, now
    )
    if wait > 0:
        # Over the account's poll budget: come back when a token frees, spread out so the jobs
        # that were refused together do not all return in the same instant.
        repo.schedule_poll(ctx.store, job_id, now + wait + random.uniform(0.0, max(wait, 0.5)))
        return None
    try:
        remote = provider.get_job(job["provider_job_id"])
        _sync_events(ctx, job, provider)
        _sync_checkpoints(ctx, job, provider)
    except ProviderError as exc:
        failures = int(job.get("poll_failures", 0)) + 1
        lifecycle.set_fields(ctx.store, job_id, poll_failures=failures)
        if not exc.retryable and failures >= 5:
            fail(ctx, job_id, exc.code or "provider_error", exc.message)
            return None
        delay = max(exc.retry_after or 0.0, min(base * 2 ** min(failures, 6), MAX_POLL_INTERVAL_S))
        repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + delay)
        return None
    updates: dict[str, Any] = {
        "provider_status": remote.status,
        "poll_failures": 0,
        "last_polled_at": ctx.clock.now(),
    }
    if remote.estimated_finish:
        updates["estimated_finish"] = remote.estimated_finish
    if remote.status in PROVIDER_STATES:
        status, stage = PROVIDER_STATES[remote.status]
        if (job["status"], job["stage"]) != (status, stage):
            if (
                lifecycle.try_transition(
                    ctx.store, job_id, status, stage, f"Provider status: {remote.status}", updates=updates
                )
                is None
            ):
                return None
        else:
            lifecycle.set_fields(ctx.store, job_id, **updates)
        # Poll a little less often while nothing changes, never slower than the cap.
        quiet_for = ctx.clock.now() - float(job.get("stage_changed_at") or ctx.clock.now())
        interval = min(base * (1 + quiet_for // 300), MAX_POLL_INTERVAL_S)
        repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + interval)
        return None
    if remote.status == "succeeded":
        updates.update(
            {
                "provider_fine_tuned_model": remote.fine_tuned_model,
                "trained_tokens": remote.trained_tokens,
                "provider_result_files": remote.result_files,
            }
        )
        if (
            lifecycle.try_transition(
                ctx.store,
                job_id,
                states.RUNNING,
                "finalizing",
                "Provider finished training; finalizing",
                updates=updates,
            )
            is None
        ):
            return None
        repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + WATCHDOG_S)  # watchdog for finalize
        return tasknames.JOB_FINALIZE
    if remote.status == "failed":
        error = remote.error or {"code": "provider_failed", "message": "the provider reported failure"}
        lifecycle.try_transition(
            ctx.store,
            job_id,
            states.FAILED,
            "done",
            f"Job failed at the provider: {error.get('message')}",
            level="error",
            updates={
                **updates,
                "error": {
                    "code": error.get("code") or "provider_failed",
                    "message": error.get("message"),
                    "param": error.get("param"),
                },
            },
        )
        return None
    if remote.status == "cancelled":
        lifecycle.try_transition(
            ctx.store, job_id, states.CANCELLED, "done", "Job was cancelled at the provider", updates=updates
        )
        return None
    repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + base)
    return None


def _sync_events(ctx: PipelineContext, job: dict[str, Any], provider: Provider) -> None:
    seen = set(job.get("provider_events_seen") or [])
    fresh = [e for e in reversed(provider.list_events(job["provider_job_id"], limit=100)) if e.id not in seen]
    rows = []
    for event in fresh:
        if event.type == "metrics" and event.data.get("step") is not None:
            rows.append(metrics.row(event.data))
        lifecycle.record_event(
            ctx.store, job["id"], event.message, level=event.level, type_=event.type, data=event.data
        )
        seen.add(event.id)
    if rows:
        repo.put_metrics(ctx.store, job["id"], rows)
    if fresh:
        # Keep the set bounded: provider lists are newest first, so old ids never come back.
        lifecycle.set_fields(ctx.store, job["id"], provider_events_seen=sorted(seen)[-500:])


def _sync_checkpoints(ctx: PipelineContext, job: dict[str, Any], provider: Provider) -> None:
    for cp in provider.list_checkpoints(job["provider_job_id"]):
        record = {
            "id": ids.PREFIXES["checkpoint"] + hashlib.sha256(cp.id.encode()).hexdigest()[:24],
            "object": "fine_tuning.job.checkpoint",
            "created_at": cp.created_at,
            "fine_tuned_model_checkpoint": cp.fine_tuned_model_checkpoint,
            "fine_tuning_job_id": job["id"],
            "step_number": cp.step_number,
            "metrics": {"step": cp.step_number, **cp.metrics},
        }
        lifecycle.record_checkpoint(ctx.store, job["id"], record)


# --- finalize ----------------------------------------------------------------------------------


def run_finalize(ctx: PipelineContext, job_id: str, attempt: int = 0) -> str | None:
    job = _enter(ctx, job_id, "finalizing")
    if job is None:
        return None
    provider = ctx.providers(job["provider"])
    result_files: list[str] = []
    try:
        for provider_file in job.get("provider_result_files") or []:
            rows = provider.result_metrics(provider_file)
            if rows:
                repo.put_metrics(ctx.store, job_id, rows)
            result_files.append(_store_result_file(ctx, job, rows))
    except ProviderError as exc:
        repo.reset_attempts(ctx.store, job_id, "finalizing")
        _handle_provider_error(ctx, job_id, exc, attempt)
        return None
    name = fine_tuned_model_name(job["model"], job["tenant"], job.get("suffix"), job_id)
    next_step = finish_or_evaluate(ctx, job, {"fine_tuned_model": name, "result_files": result_files})
    repo.reset_attempts(ctx.store, job_id, "finalizing")
    return next_step


def finish_or_evaluate(ctx: PipelineContext, job: dict[str, Any], updates: dict[str, Any]) -> str | None:
    """Succeed the trained job, or move it to ``evaluating`` when it has a held-out test set.

    Returns the next task to enqueue (the evaluation), or None.
    """
    name = updates["fine_tuned_model"]
    if (job.get("prepared") or {}).get("test"):
        moved = lifecycle.try_transition(
            ctx.store,
            job["id"],
            states.RUNNING,
            "evaluating",
            f"New fine-tuned model created: {name}; evaluating it on the held-out test set",
            updates=updates,
        )
        if moved is None:
            return None
        repo.schedule_poll(ctx.store, job["id"], ctx.clock.now() + WATCHDOG_S)  # watchdog for evaluate
        return tasknames.JOB_EVALUATE
    lifecycle.try_transition(
        ctx.store,
        job["id"],
        states.SUCCEEDED,
        "done",
        f"The job has successfully completed: {name}",
        updates=updates,
    )
    return None


def _store_result_file(ctx: PipelineContext, job: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Keep the metrics as a tenant-visible result file (purpose ``fine-tune-results``)."""
    payload = metrics.to_csv(rows).encode()
    file_id = "file-" + hashlib.sha256(f"{job['id']}:results".encode()).hexdigest()[:24]
    path = files.blob_path(ctx.settings.data_dir, file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    record = files.FileRecord(
        id=file_id,
        tenant=job["tenant"],
        bytes=len(payload),
        created_at=int(time.time()),
        filename=f"{job['id']}-results.csv",
        purpose="fine-tune-results",
        sha256=hashlib.sha256(payload).hexdigest(),
        status="processed",
    )
    files.save_record(ctx.store, record)
    return file_id
