"""Re-training an import (DESIGN §15): one experiment per imported job, on the job's own data,
with the caller's candidates and the job's original fine-tuned model evaluated beside them.

The original model is an evaluate-only candidate (``jobs.usecases.build_evaluation``): it trains
nothing and answers the same held-out examples through the backend that serves it. The held-out
set is the imported job's validation file when it has one (the original model never trained on
it), else a deterministic split of its training file (which the original model did see: its
scores there flatter it, and the response says so with ``test_set: "split"``).

Idempotent: experiment ids are derived from (import, job), and the request's fingerprint is kept
on the import: the same request again answers the same experiments (creating any a crash left
out), a different one is refused with 409.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.core import experiments, files, ids
from service.core.auth import Principal
from service.core.backends import registry
from service.core.errors import Conflict, NotFound, TunelineError, Unprocessable
from service.core.imports.usecases import TERMINAL
from service.core.jobs import states
from service.core.jobs.record import Job
from service.core.jobs.usecases import JobsContext
from service.core.store import Store
from service.core.store import imports as repo
from service.core.store import jobs as jobs_repo
from service.core.store.base import Pipeline

LOCK_S = 60
DEFAULT_SPLIT = {"test": 0.1, "seed": experiments.DEFAULT_SEED}
TEST_SETS = ("validation_file", "split")
PAGE = 200


def experiment_id_for(import_id: str, job_id: str) -> str:
    """The experiment re-training one imported job: derived, so a repeated request finds it."""
    digest = hashlib.sha256(f"{import_id}|{job_id}".encode()).hexdigest()
    return ids.PREFIXES["experiment"] + digest[:24]


def _normalized(params: dict[str, Any]) -> dict[str, Any]:
    """The request with its defaults filled in, so that leaving a default out changes nothing."""
    split = {**DEFAULT_SPLIT, **(params.get("split") or {})}
    return {
        "candidates": list(params.get("candidates") or []),
        "split": split,
        "include_original": params.get("include_original", True),
        "jobs": params.get("jobs"),
    }


def _fingerprint(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def finished_import(store: Store, principal: Principal, import_id: str, what: str) -> dict[str, Any]:
    """The caller's own import, once it has ended (what it makes is the caller's tenant's)."""
    doc = repo.load(store, import_id)
    if doc is None or doc["tenant"] != principal.tenant:
        raise NotFound(f"No such import: {import_id}", param="import_id", code="import_not_found")
    if doc["status"] not in TERMINAL:
        raise Conflict(
            f"Import {import_id} is {doc['status']}; {what} it once it has finished.",
            param="import_id",
            code="import_not_finished",
            headers={"x-should-retry": "false"},
        )
    return doc


@contextmanager
def import_lock(store: Store, import_id: str) -> Iterator[None]:
    """One request at a time works on an ended import (the lock its task held while it ran)."""
    token = secrets.token_hex(8)
    if not repo.acquire_lock(store, import_id, token, LOCK_S):
        raise Conflict(
            f"Import {import_id} is busy with another request; try again.",
            param="import_id",
            code="import_busy",
            headers={"x-should-retry": "true"},
        )
    try:
        yield
    finally:
        repo.release_lock(store, import_id, token)


def retrain_import(
    ctx: JobsContext, principal: Principal, import_id: str, params: dict[str, Any]
) -> dict[str, Any]:
    """``POST /v1/imports/{id}/retrain``: the experiments, one per imported job, and what was left out."""
    doc = finished_import(ctx.store, principal, import_id, "re-train")
    with import_lock(ctx.store, import_id):
        return _retrain(ctx, principal, doc, _normalized(params))


def _retrain(
    ctx: JobsContext, principal: Principal, doc: dict[str, Any], request: dict[str, Any]
) -> dict[str, Any]:
    fingerprint = _fingerprint(request)
    done = doc.get("retrain")
    if done is not None and done["fingerprint"] != fingerprint:
        made = ", ".join(e["experiment_id"] for e in done["data"]) or "none"
        raise Conflict(
            f"Import {doc['id']} was already re-trained with other candidates or split (experiments: "
            f"{made}); compare more candidates with POST /v1/experiments.",
            param="import_id",
            code="import_already_retrained",
            headers={"x-should-retry": "false"},
        )
    if done is not None and all(experiments.exists(ctx.store, e["experiment_id"]) for e in done["data"]):
        return view(doc["id"], done)
    if request["include_original"] and (reason := original_not_served(ctx, doc)) is not None:
        raise Unprocessable(
            f"The original fine-tuned models cannot be evaluated here: {reason.message} Configure the "
            "provider with that account's key (TUNELINE_OPENAI_API_KEY / TUNELINE_OPENAI_BASE_URL), or "
            "send include_original: false to re-train without them.",
            param="include_original",
            code=reason.code,
            headers={"x-should-retry": "false"},
        )
    chosen, skipped = choose_jobs(ctx.store, doc, request["jobs"])
    plans = []
    for index, job in chosen:
        experiment_id = experiment_id_for(doc["id"], job.id)
        test_set = _test_set(ctx.store, job)
        plans.append(
            (job, test_set, experiment_id, _plan(ctx, principal, doc, request, job, index, test_set))
        )
    result = {
        "fingerprint": fingerprint,
        "data": [
            {
                "job_id": job.id,
                "provider_job_id": job.provider_job_id,
                "fine_tuned_model": job.fine_tuned_model,
                "test_set": test_set,
                "experiment_id": experiment_id,
            }
            for job, test_set, experiment_id, _ in plans
        ],
        "skipped": skipped,
    }

    def keep(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
        stored["retrain"] = result
        return stored

    # Recorded before anything starts: a crash from here on is finished by the same request again.
    repo.update(ctx.store, doc["id"], keep)
    for *_, planned in plans:
        if planned is not None:
            experiments.start_experiment(ctx, planned)
    return view(doc["id"], result)


def view(import_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "import.retrain",
        "import_id": import_id,
        "data": result["data"],
        "skipped": result["skipped"],
    }


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def original_not_served(ctx: JobsContext, doc: dict[str, Any]) -> Refusal | None:
    """Why the import's original models cannot answer here, or None: they answer only through the
    deployment's backend for the account the import read."""
    source = doc["source"]
    try:
        backend = ctx.backend(source)
    except TunelineError as exc:
        return Refusal("provider_not_configured", exc.message)
    account = registry.account_name(ctx.settings, source, doc.get("base_url"))
    if backend.account.rstrip("/") != account.rstrip("/"):
        return Refusal(
            "original_model_not_served",
            f"The original models live in the account at {account.partition(':')[2]}, but this "
            f"deployment's {source} provider is {backend.account.partition(':')[2]}.",
        )
    return None


# --- which jobs ------------------------------------------------------------------------------


def imported_jobs(store: Store, tenant: str, import_id: str) -> list[Job]:
    """The jobs this import recorded, oldest first."""
    out: list[Job] = []
    after = None
    while True:
        page, more = jobs_repo.walk(store, tenant, after, PAGE, lambda j: j.get("import_id") == import_id)
        out.extend(Job.from_dict(j) for j in page)
        if not more or not page:
            return out[::-1]
        after = page[-1]["id"]


def _unfit(store: Store, job: Job) -> Refusal | None:
    """Why an imported job cannot be re-trained, or None."""
    if job.status != states.SUCCEEDED or not job.fine_tuned_model:
        return Refusal("job_not_succeeded", f"the job {job.status} at the provider: it made no model")
    if not job.training_file:
        return Refusal(
            "training_file_missing",
            "the account could not give its training file at import (see the import's `skipped`)",
        )
    record = files.load_file(store, job.training_file)
    if record is None:
        return Refusal("training_file_missing", f"its training file {job.training_file} was deleted")
    if record.status == "error":
        return Refusal(
            "invalid_training_file",
            f"its training file {record.id} failed preparation: {record.status_details}",
        )
    return None


def _not_ready(store: Store, job: Job, param: str) -> Unprocessable | None:
    record = files.load_file(store, job.training_file)
    if record is not None and record.status == "uploaded":
        return Unprocessable(
            f"The training file {record.id} of imported job {job.id} is still being prepared; "
            "retry when its status is 'processed'.",
            param=param,
            code="file_not_ready",
            headers={"x-should-retry": "false"},
        )
    return None


def choose_jobs(
    store: Store, doc: dict[str, Any], wanted: list[str] | None
) -> tuple[list[tuple[int | None, Job]], list[dict[str, Any]]]:
    """The imported jobs to work on (with their index in ``jobs``) and those left out, with why:
    succeeded, with a training file that is prepared.

    Jobs named in ``jobs`` must all fit (an error names the entry); by default every imported
    job that fits is taken and the others are listed in ``skipped``.
    """
    found = imported_jobs(store, doc["tenant"], doc["id"])
    if wanted:
        by_name = {j.id: j for j in found} | {j.provider_job_id: j for j in found if j.provider_job_id}
        chosen: list[tuple[int | None, Job]] = []
        for index, name in enumerate(wanted):
            job = by_name.get(name)
            param = f"jobs.{index}"
            if job is None:
                raise Unprocessable(
                    f"Import {doc['id']} recorded no job {name!r}.", param=param, code="job_not_in_import"
                )
            unfit = _unfit(store, job)
            if unfit is not None:
                raise Unprocessable(
                    f"Job {name} cannot be re-trained: {unfit.message}.", param=param, code=unfit.code
                )
            if (not_ready := _not_ready(store, job, param)) is not None:
                raise not_ready
            chosen.append((index, job))
        return chosen, []
    chosen, skipped = [], []
    for job in found:
        unfit = _unfit(store, job)
        if unfit is None:
            if (not_ready := _not_ready(store, job, "import_id")) is not None:
                raise not_ready
            chosen.append((None, job))
        else:
            skipped.append(
                {
                    "job_id": job.id,
                    "provider_job_id": job.provider_job_id,
                    "code": unfit.code,
                    "message": unfit.message,
                }
            )
    if not chosen:
        raise Unprocessable(
            f"Import {doc['id']} holds no job with a model and a training file: "
            + ("; ".join(f"{s['provider_job_id']}: {s['message']}" for s in skipped) or "it recorded no jobs")
            + ".",
            param="import_id",
            code="no_retrainable_jobs",
            headers={"x-should-retry": "false"},
        )
    return chosen, skipped


def _test_set(store: Store, job: Job) -> str:
    """The imported job's validation file when it can be one (held out from the original too)."""
    if job.validation_file:
        record = files.load_file(store, job.validation_file)
        if record is not None and record.status == "processed":
            return "validation_file"
    return "split"


# --- one experiment --------------------------------------------------------------------------


def _plan(
    ctx: JobsContext,
    principal: Principal,
    doc: dict[str, Any],
    request: dict[str, Any],
    job: Job,
    index: int | None,
    test_set: str,
) -> experiments.Planned | None:
    """The experiment for one imported job, validated; None when it exists already."""
    experiment_id = experiment_id_for(doc["id"], job.id)
    if experiments.exists(ctx.store, experiment_id):
        return None
    split = dict(request["split"])
    params: dict[str, Any] = {
        "name": f"Re-train {job.provider_job_id} ({job.fine_tuned_model})",
        "training_file": job.training_file,
        "seed": split["seed"],
        "metadata": {"import_id": doc["id"], "imported_job": job.id},
    }
    if test_set == "validation_file":
        params["test_file"] = job.validation_file
        split.pop("test", None)
    if split.get("test") or split.get("validation"):
        params["prepare"] = {"split": split}
    candidates = list(request["candidates"])
    if request["include_original"]:
        candidates.append({"model": job.fine_tuned_model, "evaluate_only": True})
    params["candidates"] = candidates
    extra = {"import_id": doc["id"], "imported_job_id": job.id}
    try:
        return experiments.plan_experiment(ctx, principal, params, experiment_id, extra)
    except TunelineError as exc:
        raise _about_job(exc, job, index, len(request["candidates"])) from None


def _about_job(exc: TunelineError, job: Job, index: int | None, n_candidates: int) -> TunelineError:
    """An error from one job's experiment, pointed at what the caller sent: its candidate, the
    original model (``include_original``), or the imported job itself."""
    param = exc.param or ""
    if param.startswith(f"candidates.{n_candidates}.") or param == f"candidates.{n_candidates}":
        exc.message = f"The original model {job.fine_tuned_model} of imported job {job.id}: {exc.message}"
        exc.param = "include_original"
    elif not param.startswith("candidates."):
        exc.message = f"Imported job {job.id} ({job.provider_job_id}): {exc.message}"
        exc.param = f"jobs.{index}" if index is not None else "import_id"
    return exc
