"""OpenAI's fine-tuning objects (as plain dicts) -> Tuneline's records; pure, no I/O.

An imported job is history: its status is the one the provider reported, its stage ``done``,
and it carries ``import_id`` so that nothing in Tuneline ever submits, polls or cancels it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from service.core import ids
from service.core.jobs import metrics, states
from service.core.jobs.record import Job
from service.core.store import jobs as repo

# OpenAI's training methods; anything else is kept as it came.
_METHOD_HYPER_KEYS = ("supervised", "dpo", "reinforcement")


def job_id_for(tenant: str, account: str, provider_job_id: str) -> str:
    """The Tuneline id of an imported job: derived, so importing it again finds the same record."""
    digest = hashlib.sha256(f"{tenant}|{account}|{provider_job_id}".encode()).hexdigest()
    return ids.PREFIXES["job"] + digest[:24]


def is_finished(raw: dict[str, Any]) -> bool:
    """Only ended jobs are imported: a running one is never polled here (import it once it ended)."""
    return raw.get("status") in states.TERMINAL


def suffix_of(fine_tuned_model: str | None) -> str | None:
    """The suffix in OpenAI's ``ft:<base>:<org>:<suffix>:<id>`` name, when there is one."""
    if not fine_tuned_model or not fine_tuned_model.startswith("ft:"):
        return None
    parts = fine_tuned_model.split(":")
    return parts[3] or None if len(parts) >= 5 else None


def _hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """The top-level hyperparameters, or the method's when OpenAI put them only there."""
    hyper = {k: v for k, v in (raw.get("hyperparameters") or {}).items() if v is not None}
    method = raw.get("method") or {}
    nested = ((method.get(method.get("type") or "") or {}).get("hyperparameters")) or {}
    for key, value in nested.items():
        if value is not None:
            hyper.setdefault(key, value)
    return hyper


def _method(raw: dict[str, Any]) -> dict[str, Any] | None:
    method = raw.get("method")
    if not isinstance(method, dict):
        return None
    return {k: v for k, v in method.items() if v is not None and (k == "type" or k in _METHOD_HYPER_KEYS)}


def _error(raw: dict[str, Any]) -> dict[str, Any] | None:
    error = raw.get("error")
    if not isinstance(error, dict) or not (error.get("code") or error.get("message")):
        return None
    return {"code": error.get("code"), "message": error.get("message"), "param": error.get("param")}


def _str_metadata(raw: dict[str, Any]) -> dict[str, str] | None:
    metadata = raw.get("metadata")
    if not isinstance(metadata, dict) or not metadata:
        return None
    return {str(k): str(v) for k, v in metadata.items()}


def to_job(
    raw: dict[str, Any],
    *,
    tenant: str,
    source: str,
    account: str,
    import_id: str,
    training_file: str | None,
    validation_file: str | None,
    now: int,
) -> Job:
    """The read-only Tuneline record of a provider job that ended."""
    status = str(raw["status"])
    created = int(raw.get("created_at") or now)
    return Job(
        id=job_id_for(tenant, account, str(raw["id"])),
        tenant=tenant,
        provider=source,
        status=status,
        stage="done",
        model=str(raw.get("model") or ""),
        training_file=training_file or "",
        validation_file=validation_file,
        created_at=created,
        updated_at=now,
        finished_at=int(raw["finished_at"]) if raw.get("finished_at") else None,
        hyperparameters=_hyperparameters(raw),
        method=_method(raw),
        suffix=raw.get("user_provided_suffix") or suffix_of(raw.get("fine_tuned_model")),
        seed=raw.get("seed"),
        metadata=_str_metadata(raw),
        provider_job_id=str(raw["id"]),
        provider_status=status,
        fine_tuned_model=raw.get("fine_tuned_model"),
        trained_tokens=raw.get("trained_tokens"),
        error=_error(raw),
        integrations=list(raw.get("integrations") or []),
        import_id=import_id,
    )


def events(job_id: str, raw_events: list[dict[str, Any]], closing: str, now: int) -> list[dict[str, Any]]:
    """The provider's events (oldest first) under Tuneline ids, then one saying where they came from."""
    out: list[dict[str, Any]] = []
    for seq, event in enumerate(raw_events, 1):
        out.append(
            {
                "id": repo.event_id(job_id, seq),
                "object": "fine_tuning.job.event",
                "created_at": int(event.get("created_at") or now),
                "level": str(event.get("level") or "info"),
                "message": str(event.get("message") or ""),
                "type": str(event.get("type") or "message"),
                "data": event.get("data") if isinstance(event.get("data"), dict) else {},
            }
        )
    out.append(
        {
            "id": repo.event_id(job_id, len(out) + 1),
            "object": "fine_tuning.job.event",
            "created_at": now,
            "level": "info",
            "message": closing,
            "type": "message",
            "data": {},
        }
    )
    return out


def checkpoint(job_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A provider checkpoint as Tuneline stores it (the id derived the way polling derives it)."""
    step = int(raw["step_number"])
    values = {k: v for k, v in (raw.get("metrics") or {}).items() if v is not None}
    return {
        "id": ids.PREFIXES["checkpoint"] + hashlib.sha256(str(raw["id"]).encode()).hexdigest()[:24],
        "object": "fine_tuning.job.checkpoint",
        "created_at": int(raw.get("created_at") or 0),
        "fine_tuned_model_checkpoint": raw.get("fine_tuned_model_checkpoint"),
        "fine_tuning_job_id": job_id,
        "step_number": step,
        "metrics": {**values, "step": step},
    }


def metrics_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result-file rows keyed by step (the last row of a step wins), with OpenAI's columns."""
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.get("step") is None:
            continue
        by_step[int(row["step"])] = metrics.row(row)
    return [by_step[s] for s in sorted(by_step)]
