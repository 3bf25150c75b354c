"""Use cases at the API edge: create, read, list and cancel fine-tuning jobs."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from service.core import files, ids
from service.core.auth import Principal
from service.core.dispatch import Dispatcher
from service.core.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from service.core.jobs import lifecycle, states
from service.core.jobs.views import public_job
from service.core.preparation import get_report
from service.core.store import Store
from service.core.store import jobs as repo
from service.settings import PROVIDERS, Settings

TASK_PREPARE = "tuneline.jobs.prepare"
TASK_CANCEL = "tuneline.provider.cancel"
SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class JobsContext:
    settings: Settings
    store: Store
    dispatcher: Dispatcher


def fine_tuned_model_name(base: str, tenant: str, suffix: str | None, job_id: str) -> str:
    """DESIGN §9: ``ft:<base model>:<tenant>:<suffix or empty>:<job id>``."""
    return f"ft:{base}:{tenant}:{suffix or ''}:{job_id}"


def _usable_file(ctx: JobsContext, principal: Principal, file_id: str, param: str) -> files.FileRecord:
    record = files.load_file(ctx.store, file_id)
    if record is None or record.tenant != principal.tenant:
        raise InvalidRequest(f"File {file_id!r} was not found.", param=param, code="file_not_found")
    if record.status == "uploaded":
        raise Unprocessable(
            f"File {file_id} is still being processed; retry when its status is 'processed'.",
            param=param, code="file_not_ready", headers={"x-should-retry": "false"})
    if record.status != "processed":
        raise Unprocessable(f"File {file_id} failed preparation: {record.status_details}",
                            param=param, code="invalid_training_file" if param == "training_file"
                            else "invalid_file")
    return record


def _epochs(hyper: dict[str, Any], method: dict[str, Any] | None, examples: int) -> int:
    from service.core.datasets import default_epochs

    value = hyper.get("n_epochs", "auto")
    if method:
        for kind in ("supervised", "dpo"):
            value = ((method.get(kind) or {}).get("hyperparameters") or {}).get("n_epochs", value)
    return int(value) if isinstance(value, int) else default_epochs(examples)


def estimate_cost(report: dict[str, Any], model: str, n_epochs: int) -> dict[str, Any]:
    from service.core.datasets import resolve_model

    spec = resolve_model(model)
    per_epoch = int((report.get("tokens") or {}).get("billed_per_epoch") or 0)
    billed = per_epoch * n_epochs
    return {"n_epochs": n_epochs, "billed_tokens": billed, "price_per_million": spec.price_per_million,
            "cost_usd": round(billed * spec.price_per_million / 1_000_000, 4)}


def create_job(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """Validate everything a client could get wrong, then record the job and start the pipeline."""
    from service.core.datasets import resolve_model

    provider = params.get("provider") or ctx.settings.provider_default
    if provider not in PROVIDERS:
        raise InvalidRequest(f"provider must be one of {', '.join(PROVIDERS)}", param="provider",
                             code="invalid_provider")
    if provider == "local":
        raise Unprocessable("The local trainer is not enabled in this deployment.", param="provider",
                            code="provider_not_available")
    from service.core.providers.registry import provider_for

    provider_for(provider, ctx.settings)  # refuses an unconfigured provider now, not in a worker
    model = params["model"]
    try:
        resolve_model(model)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="model", code="model_not_found") from None
    if params.get("validation_file") and params["validation_file"] == params["training_file"]:
        raise InvalidRequest("validation_file must differ from training_file (held-out data).",
                             param="validation_file", code="invalid_validation_file")
    suffix = params.get("suffix")
    if suffix is not None and not SUFFIX_RE.match(suffix):
        raise InvalidRequest("suffix must be 1-64 letters, digits, '-' or '_'.", param="suffix",
                             code="invalid_suffix")
    training = _usable_file(ctx, principal, params["training_file"], "training_file")
    if params.get("validation_file"):
        _usable_file(ctx, principal, params["validation_file"], "validation_file")
    if params.get("test_file"):
        _usable_file(ctx, principal, params["test_file"], "test_file")
    webhook = params.get("webhook")
    if webhook:
        from service.core.webhooks.ssrf import UnsafeWebhookURL, check_url

        try:
            check_url(webhook["url"], allow_loopback=ctx.settings.webhook_allow_loopback)
        except UnsafeWebhookURL as exc:
            raise Unprocessable(str(exc), param="webhook.url", code="unsafe_webhook_url") from None
        from service.core.webhooks_outbox import DEFAULT_EVENTS

        webhook = {"url": webhook["url"], "events": list(webhook.get("events") or DEFAULT_EVENTS)}
    report = get_report(ctx.store, training.id) or {}
    examples = int((report.get("counts") or {}).get("kept") or (report.get("counts") or {}).get("valid") or 0)
    hyper = dict(params.get("hyperparameters") or {})
    estimate = estimate_cost(report, model, _epochs(hyper, params.get("method"), examples))
    max_cost = params.get("max_cost_usd")
    if max_cost is not None and estimate["cost_usd"] > max_cost:
        raise Unprocessable(
            f"Estimated cost ${estimate['cost_usd']:.2f} ({estimate['billed_tokens']} billed tokens over "
            f"{estimate['n_epochs']} epochs) exceeds max_cost_usd ${max_cost:.2f}.",
            param="max_cost_usd", code="budget_exceeded", headers={"x-should-retry": "false"})
    now = time.time()
    job_id = ids.new_id("job")
    job: dict[str, Any] = {
        "id": job_id, "tenant": principal.tenant, "created_at": int(now), "updated_at": int(now),
        "model": model, "training_file": training.id, "validation_file": params.get("validation_file"),
        "test_file": params.get("test_file"),
        "hyperparameters": {"n_epochs": hyper.get("n_epochs", "auto"),
                            "batch_size": hyper.get("batch_size", "auto"),
                            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto")},
        "method": params.get("method"), "suffix": suffix, "seed": params.get("seed"),
        "metadata": params.get("metadata"), "provider": provider, "webhook": webhook,
        "max_cost_usd": max_cost, "estimate": estimate, "prepare": params.get("prepare"),
        "sandbox": params.get("sandbox"), "status": states.VALIDATING, "stage": "preparing",
        "provider_status": None, "provider_job_id": None, "fine_tuned_model": None,
        "finished_at": None, "trained_tokens": None, "error": None, "result_files": [],
        "estimated_finish": None, "event_count": 0, "stage_changed_at": now,
    }
    repo.insert(ctx.store, job, now * 1000)
    repo.schedule_poll(ctx.store, job_id, now + 60.0)  # the pipeline watchdog (see pipeline.run_poll)
    lifecycle.record_event(ctx.store, job_id, f"Created fine-tuning job: {job_id} (provider {provider})")
    ctx.dispatcher.enqueue(TASK_PREPARE, job_id)
    return public_job(repo.load(ctx.store, job_id) or job)


def get_job(store: Store, principal: Principal, job_id: str) -> dict[str, Any]:
    job = repo.load(store, job_id)
    if job is None or not principal.can_read(job["tenant"]):
        raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
    return job


def list_jobs(store: Store, principal: Principal, after: str | None, limit: int,
              filters: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    tenant = None if principal.is_ops else principal.tenant
    metadata = filters.get("metadata") or {}

    def keep(job: dict[str, Any]) -> bool:
        if filters.get("status") and job["status"] != filters["status"]:
            return False
        if filters.get("provider") and job["provider"] != filters["provider"]:
            return False
        return all((job.get("metadata") or {}).get(k) == v for k, v in metadata.items())

    out: list[dict[str, Any]] = []
    cursor = after
    while len(out) <= limit:
        batch, more = repo.page_ids(store, tenant, cursor, max(limit + 1, 100))
        for job_id in batch:
            job = repo.load(store, job_id)
            if job is not None and keep(job):
                out.append(job)
        if not more or not batch:
            break
        cursor = batch[-1]
    return [public_job(j) for j in out[:limit]], len(out) > limit


def cancel_job(ctx: JobsContext, principal: Principal, job_id: str) -> dict[str, Any]:
    job = get_job(ctx.store, principal, job_id)
    if job["status"] in states.TERMINAL:
        raise Conflict(f"Job {job_id} has already {job['status']}; it cannot be cancelled.",
                       code="job_not_cancellable", headers={"x-should-retry": "false"})
    try:
        job = lifecycle.transition(ctx.store, job_id, states.CANCELLED, "done",
                                   "Fine-tuning job cancelled by the user.")
    except states.IllegalTransition:
        job = get_job(ctx.store, principal, job_id)
        raise Conflict(f"Job {job_id} has already {job['status']}; it cannot be cancelled.",
                       code="job_not_cancellable", headers={"x-should-retry": "false"}) from None
    if job.get("provider_job_id") or job.get("submit_started"):
        ctx.dispatcher.enqueue(TASK_CANCEL, job_id)
    return public_job(job)
