"""A tenant's fine-tuned models: resolve a model id to its job, list, retrieve and delete them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from service.core import ids
from service.core.auth import Principal
from service.core.backends.base import Backend
from service.core.errors import NotFound
from service.core.jobs import lifecycle, record
from service.core.jobs.record import Job
from service.core.store import Store
from service.core.store import imports as imports_repo
from service.core.store import jobs as repo

log = logging.getLogger("tuneline.models")
_CHECKPOINT = re.compile(r"^(?P<model>.+):ckpt-step-(?P<step>[1-9][0-9]{0,8})$")


def not_found(model: str) -> NotFound:
    # OpenAI's wording; the same answer for another tenant's model and for one that never existed.
    return NotFound(
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def job_id_of(model: str) -> str | None:
    """The job id in ``ft:<base>:<tenant>:<suffix>:<job id>`` (DESIGN §9), or None."""
    if not model.startswith("ft:"):
        return None
    tail = model.rsplit(":", 1)[-1]
    return tail if ids.has_prefix("job", tail) else None


def resolve(store: Store, principal: Principal, model: str) -> Job:
    """The job that trained ``model`` (or an imported job that names it), when it belongs to the
    caller's tenant and still exists."""
    for job_id in (job_id_of(model), imports_repo.imported_model_job(store, principal.tenant, model)):
        job = record.load(store, job_id) if job_id else None
        if job is not None and job.tenant == principal.tenant and job.fine_tuned_model == model:
            if job.model_deleted:
                break
            return job
    raise not_found(model)


def resolve_checkpoint(store: Store, principal: Principal, model: str) -> tuple[Job, int | None]:
    """The job behind ``model`` and the checkpoint step it names (``ft:...:ckpt-step-N``, as
    OpenAI names checkpoint models), None for the final model. 404 for an unknown checkpoint."""
    match = _CHECKPOINT.match(model)
    if match is None:
        return resolve(store, principal, model), None
    job = resolve(store, principal, match.group("model"))
    step = int(match.group("step"))
    if not any(c.get("fine_tuned_model_checkpoint") == model for c in repo.list_checkpoints(store, job.id)):
        raise not_found(model)
    return job, step


def model_object(job: Job) -> dict[str, Any]:
    """OpenAI's ``model`` object, plus where it came from (additive fields)."""
    return {
        "id": job.fine_tuned_model,
        "object": "model",
        "created": int(job.finished_at or job.created_at),
        "owned_by": job.tenant,
        "base_model": job.model,
        "fine_tuning_job_id": job.id,
        "provider": job.provider,
    }


def list_models(
    store: Store, principal: Principal, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The tenant's fine-tuned models, newest job first; ``after`` is a model id."""

    def usable(job: dict[str, Any]) -> bool:
        return bool(job.get("fine_tuned_model")) and not job.get("model_deleted")

    cursor = job_id_of(after) if after else None
    if after and cursor is None:
        return [], False
    found, more = repo.walk(store, principal.tenant, cursor, limit, usable)
    return [model_object(Job.from_dict(j)) for j in found], more


def get_model(store: Store, principal: Principal, model: str) -> dict[str, Any]:
    return model_object(resolve(store, principal, model))


def delete_model(
    backends: Callable[[str], Backend], store: Store, principal: Principal, model: str
) -> dict[str, Any]:
    """Forget the model: its backend removes its files and later completions answer 404."""
    job = resolve(store, principal, model)
    removed = backends(job.provider).delete_model(job)

    def deleted(j: Job) -> None:
        j.model_deleted = True

    lifecycle.record_event(
        store,
        job.id,
        f"Fine-tuned model {model} deleted" + (" with its files" if removed else ""),
        apply=deleted,
    )
    log.info("model deleted", extra={"job_id": job.id, "files_removed": removed})
    return {"id": model, "object": "model", "deleted": True}
