"""The public (OpenAI-shaped) view of a job record; internal bookkeeping stays out."""

from __future__ import annotations

from typing import Any

from service.core.jobs.seeds import DEFAULT_SEED

PUBLIC_FIELDS = (
    "id",
    "created_at",
    "error",
    "fine_tuned_model",
    "finished_at",
    "hyperparameters",
    "model",
    "organization_id",
    "result_files",
    "seed",
    "status",
    "trained_tokens",
    "training_file",
    "validation_file",
    "integrations",
    "metadata",
    "method",
    "estimated_finish",
    "suffix",
    # Tuneline extensions (additive).
    "stage",
    "provider",
    "provider_status",
    "provider_job_id",
    "webhook",
    "max_cost_usd",
    "estimate",
    "test_file",
    "prepare",
    "evaluation",
    "experiment_id",
    "updated_at",
    "tenant",
    "priority",
)


def public_job(job: dict[str, Any]) -> dict[str, Any]:
    out = dict(zip(PUBLIC_FIELDS, map(job.get, PUBLIC_FIELDS), strict=True))  # {name: job.get(name)}, in C
    out["object"] = "fine_tuning.job"
    out["organization_id"] = job["tenant"]
    if job.get("import_id"):  # only on imported jobs: other jobs' JSON stays as it was
        out["import_id"] = job["import_id"]
    if job.get("evaluated_model"):  # only on evaluate-only jobs (they train nothing)
        out["evaluated_model"] = job["evaluated_model"]
        out["evaluated_job"] = job.get("evaluated_job")
    if job.get("compute"):  # only on jobs Tuneline trains itself (the local provider)
        out["compute"] = job["compute"]
    out["result_files"] = job.get("result_files") or []
    out["integrations"] = job.get("integrations") or []
    out["priority"] = job.get("priority") or 0  # records from before the field load as 0
    if out["seed"] is None:  # stored before Tuneline picked seeds: the one it used (jobs.seeds)
        out["seed"] = DEFAULT_SEED
    if out["webhook"]:
        out["webhook"] = {"url": out["webhook"]["url"], "events": out["webhook"]["events"]}
    return out
