"""Experiments: one training file and test set, several candidates trained and evaluated side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from service.core import ids
from service.core.auth import Principal
from service.core.errors import InvalidRequest, NotFound, TunelineError
from service.core.evaluation.results import example_rows, scores
from service.core.jobs import states
from service.core.jobs.record import Job
from service.core.jobs.usecases import JobsContext, build_evaluation, build_job, start_job
from service.core.pagination import page_list
from service.core.store import Store
from service.core.store import experiments as repo
from service.core.store import jobs as jobs_repo

DEFAULT_SEED = 42
# A candidate's own fields; everything else is shared by all candidates.
CANDIDATE_FIELDS = (
    "provider",
    "model",
    "hyperparameters",
    "method",
    "suffix",
    "sandbox",
    "evaluate_only",
    "compute",
)


@dataclass
class Planned:
    """An experiment validated and built, nothing stored or started yet (``start_experiment``)."""

    record: dict[str, Any]
    jobs: list[Job]


def _shared(params: dict[str, Any]) -> dict[str, Any]:
    """The job fields every candidate gets, with an explicit split seed so all splits are identical."""
    prepare = dict(params.get("prepare") or {})
    split = dict(prepare.get("split") or {})
    if not params.get("test_file") and not float(split.get("test") or 0) > 0:
        raise InvalidRequest(
            "An experiment needs a test set: test_file, or prepare.split.test > 0.",
            param="test_file",
            code="missing_test_set",
        )
    if split:
        split.setdefault("seed", params.get("seed") if params.get("seed") is not None else DEFAULT_SEED)
        prepare["split"] = split
    shared = {
        k: params[k]
        for k in ("training_file", "validation_file", "test_file", "seed", "metadata", "webhook")
        if params.get(k) is not None
    }
    if prepare:
        shared["prepare"] = prepare
    return shared


def _candidate_error(exc: TunelineError, index: int) -> TunelineError:
    """The same error, its ``param`` pointing into the candidate when the candidate caused it."""
    param = exc.param or ""
    if param.split(".")[0] in CANDIDATE_FIELDS:
        exc.param = f"candidates.{index}.{param}"
    return exc


def _build(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> Job:
    """A candidate's job: one that trains, or one that only evaluates an existing model."""
    if params.pop("evaluate_only", False):
        return build_evaluation(ctx, principal, params)
    return build_job(ctx, principal, params)


def plan_experiment(
    ctx: JobsContext,
    principal: Principal,
    params: dict[str, Any],
    experiment_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Planned:
    """Validate every candidate and build its job (nothing is stored or started).

    ``experiment_id``: a caller's own (derived) id; ``extra``: fields the record carries besides
    (where the experiment came from).
    """
    candidates = params.get("candidates") or []
    if not candidates:
        raise InvalidRequest("An experiment needs at least one candidate.", param="candidates")
    shared = _shared(params)
    experiment_id = experiment_id or ids.new_id("experiment")
    built: list[Job] = []
    for index, candidate in enumerate(candidates):
        try:
            job = _build(ctx, principal, {**shared, **candidate})
        except TunelineError as exc:
            raise _candidate_error(exc, index) from None
        job.experiment_id = experiment_id
        # Where the base can be served (local models), its first training candidate evaluates it
        # too: one baseline per distinct (provider, base model), shared by the table.
        job.evaluate_base = not job.evaluated_model and not any(
            (b.provider, b.model) == (job.provider, job.model) and not b.evaluated_model for b in built
        )
        built.append(job)
    record = {
        "id": experiment_id,
        "object": "experiment",
        "tenant": principal.tenant,
        "created_at": int(time.time()),
        "name": params.get("name"),
        "training_file": params["training_file"],
        "test_file": params.get("test_file"),
        "prepare": shared.get("prepare"),
        "candidates": [
            {
                **{k: c.get(k) for k in CANDIDATE_FIELDS if c.get(k) is not None},
                "provider": job.provider,
                "job_id": job.id,
            }
            for c, job in zip(candidates, built, strict=True)
        ],
        "metadata": params.get("metadata"),
        **(extra or {}),
    }
    return Planned(record, built)


def start_experiment(ctx: JobsContext, planned: Planned) -> dict[str, Any]:
    """Store a planned experiment and start one job per candidate."""
    repo.insert(ctx.store, planned.record)
    for job in planned.jobs:
        start_job(ctx, job)
    return experiment_view(ctx.store, planned.record, None, 0)


def create_experiment(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """Validate every candidate first (nothing starts on bad input), then start one job each."""
    return start_experiment(ctx, plan_experiment(ctx, principal, params))


def exists(store: Store, experiment_id: str) -> bool:
    return repo.load(store, experiment_id) is not None


def _load(store: Store, principal: Principal, experiment_id: str) -> dict[str, Any]:
    record = repo.load(store, experiment_id)
    if record is None or not principal.can_read(record["tenant"]):
        raise NotFound(
            f"No such experiment: {experiment_id}", param="experiment_id", code="experiment_not_found"
        )
    return record


def _row(index: int, candidate: dict[str, Any], job: dict[str, Any] | None, now: float) -> dict[str, Any]:
    if job is None:
        return {"index": index, **candidate, "status": "missing"}
    evaluation = job.get("evaluation") or {}
    estimate = job.get("estimate") or {}
    finished = job.get("finished_at")
    evaluated = job.get("evaluated_model")
    return {
        "index": index,
        "provider": job["provider"],
        # An evaluate-only candidate is the existing model it evaluates.
        "model": evaluated or job["model"],
        "evaluate_only": bool(evaluated),
        "hyperparameters": candidate.get("hyperparameters") or {},
        **({"compute": job["compute"]} if job.get("compute") else {}),  # jobs Tuneline trains
        "job_id": job["id"],
        "status": job["status"],
        "stage": job["stage"],
        "fine_tuned_model": evaluated or job.get("fine_tuned_model"),
        "evaluation_status": evaluation.get("status"),
        "metrics": evaluation.get("metrics"),
        "baseline": evaluation.get("baseline"),
        "estimated_cost_usd": estimate.get("cost_usd"),
        "billed_tokens": estimate.get("billed_tokens"),
        "trained_tokens": job.get("trained_tokens"),
        "duration_s": round((finished or now) - job["created_at"], 1),
        "error": job.get("error"),
    }


def _examples(store: Store, jobs: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Per test example: each candidate's answer (and each servable base's) next to the reference.

    Examples are matched by (prompt, reference), so a row one candidate's preparation dropped
    (over its model's token limit) shows as missing for that candidate only.
    """
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for index, job in enumerate(jobs):
        if job is None:
            continue
        for row in example_rows(store, job["id"]):
            key = (row["prompt"], row["reference"])
            entry = table.setdefault(
                key,
                {
                    "id": f"ex-{len(table)}",
                    "prompt": row["prompt"],
                    "reference": row["reference"],
                    "answers": [None] * len(jobs),
                    "baselines": {},
                },
            )
            entry["answers"][index] = {"job_id": job["id"], **scores(row)}
            if row.get("baseline") and job["model"] not in entry["baselines"]:
                entry["baselines"][job["model"]] = row["baseline"]
    return [
        {**e, "baselines": [{"model": m, **s} for m, s in e["baselines"].items()]} for e in table.values()
    ]


def _best(rows: list[dict[str, Any]]) -> int | None:
    scored = [r for r in rows if r.get("metrics") and r.get("evaluation_status") == "completed"]
    if not scored:
        return None
    # DPO candidates by held-out preference accuracy first (None where not scored: last).
    return int(
        max(
            scored,
            key=lambda r: (
                r["metrics"].get("preference_accuracy") or 0.0,
                r["metrics"]["char_f1"],
                r["metrics"]["rouge_l"],
            ),
        )["index"]
    )


def experiment_view(store: Store, record: dict[str, Any], after: str | None, limit: int) -> dict[str, Any]:
    """The side-by-side table, and a page of per-example answers (``limit`` 0: none)."""
    jobs = [jobs_repo.load(store, c["job_id"]) for c in record["candidates"]]
    now = time.time()
    rows = [_row(i, c, job, now) for i, (c, job) in enumerate(zip(record["candidates"], jobs, strict=True))]
    done = all(job is None or job["status"] in states.TERMINAL for job in jobs)
    out = {k: v for k, v in record.items() if k != "tenant"}
    out.update(
        {
            "status": "completed" if done else "running",
            "candidates": rows,
            "best_candidate": _best(rows),
        }
    )
    if limit:
        examples, more = page_list(_examples(store, jobs), after, limit)
        out.update({"examples": examples, "examples_has_more": more})
    return out


def get_experiment(
    store: Store, principal: Principal, experiment_id: str, after: str | None, limit: int
) -> dict[str, Any]:
    return experiment_view(store, _load(store, principal, experiment_id), after, limit)


def list_experiments(
    store: Store, principal: Principal, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    found, more = repo.walk(store, principal.tenant, after, limit)
    return [experiment_view(store, record, None, 0) for record in found], more
