"""Reading evaluations: a job's summary and its per-example rows, paginated."""

from __future__ import annotations

from typing import Any

from service.core.auth import Principal
from service.core.errors import NotFound
from service.core.evaluation.metrics import METRIC_NAMES
from service.core.jobs import states
from service.core.jobs.usecases import get_job
from service.core.pagination import page_list
from service.core.store import Store, evaluations

ROW_PREFIX = "ex-"
# What the methods' evaluators (``methods``) add to a stored row: per target, and per example.
ROW_SCORES = ("preferred_logprob", "non_preferred_logprob", "preference_error", "grader_score")
EXAMPLE_FIELDS = ("non_preferred",)


def has_test_set(job: dict[str, Any]) -> bool:
    split = (job.get("prepare") or {}).get("split") or {}
    return bool(job.get("test_file") or float(split.get("test") or 0) > 0)


def status_of(job: dict[str, Any]) -> str:
    """``completed``/``failed`` once run; ``running``; ``pending`` before; ``not_run`` if it never will."""
    if job.get("evaluation"):
        return str(job["evaluation"]["status"])
    if job["stage"] == "evaluating":
        return "running"
    return "not_run" if job["status"] in states.TERMINAL else "pending"


def scores(row: dict[str, Any]) -> dict[str, Any]:
    """One target's part of an evaluated row: its answer, metrics, and its method's row scores."""
    return {
        "answer": row.get("answer"),
        "error": row.get("error"),
        **{name: row.get(name) for name in METRIC_NAMES},
        **{name: row[name] for name in ROW_SCORES if name in row},
    }


def example_rows(store: Store, job_id: str) -> list[dict[str, Any]]:
    """Every evaluated example of a job, in test-set order, with the baseline's answer when there is one."""
    model = evaluations.rows(store, job_id, "model")
    base = evaluations.rows(store, job_id, "base")
    out = []
    for index in sorted(set(model) | set(base)):
        first = model.get(index) or base[index]
        row: dict[str, Any] = {
            "id": f"{ROW_PREFIX}{index}",
            "object": "fine_tuning.job.evaluation.example",
            "index": index,
            "prompt": first["prompt"],
            "reference": first["reference"],
            **{name: first[name] for name in EXAMPLE_FIELDS if name in first},
            **scores(model.get(index) or {}),
        }
        if index in base:
            row["baseline"] = scores(base[index])
        out.append(row)
    return out


def job_evaluation(
    store: Store, principal: Principal, job_id: str, after: str | None, limit: int
) -> dict[str, Any]:
    """``GET /v1/fine_tuning/jobs/{id}/evaluation``: summary and a page of examples."""
    job = get_job(store, principal, job_id)
    if not has_test_set(job):
        raise NotFound(
            f"Job {job_id} has no held-out test set (create it with test_file or prepare.split.test).",
            param="fine_tuning_job_id",
            code="evaluation_not_found",
        )
    rows = example_rows(store, job["id"])
    page, has_more = page_list(rows, after, limit)
    evaluation = job.get("evaluation") or {}
    return {
        "object": "fine_tuning.job.evaluation",
        "job_id": job["id"],
        "model": job.get("fine_tuned_model"),
        "status": status_of(job),
        "examples": evaluation.get("examples", len(rows)),
        "metrics": evaluation.get("metrics"),
        "baseline": evaluation.get("baseline"),
        "baseline_model": evaluation.get("baseline_model"),
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
