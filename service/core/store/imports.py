"""Import persistence: the import record, its encrypted key, its lock, and the one transaction
that writes an imported job with its events, checkpoints and metrics."""

from __future__ import annotations

from typing import Any

from service.core.store import keys, preparing, stats
from service.core.store.base import Change, Pipeline, Store, dumps, loads

SECRET_TTL_S = 7 * 24 * 3600  # a backstop: the key is deleted when the import ends


def load(store: Store, import_id: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = loads(store.r.get(keys.import_(import_id)))  # type: ignore[arg-type]
    return doc


def insert(store: Store, doc: dict[str, Any], created_ms: float, sealed_key: str | None) -> None:
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.import_(doc["id"]), dumps(doc))
    pipe.zadd(keys.imports_by_tenant(doc["tenant"]), {doc["id"]: created_ms})
    pipe.zadd(keys.imports_all(), {doc["id"]: created_ms})
    if sealed_key is not None:
        pipe.set(keys.import_secret(doc["id"]), sealed_key, ex=SECRET_TTL_S)
    pipe.execute()


def update(store: Store, import_id: str, change: Change) -> dict[str, Any] | None:
    """Read-modify-write of the import record; ``change`` may queue more writes on the pipeline."""
    return store.update_json(keys.import_(import_id), change)


def walk(
    store: Store, tenant: str | None, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    index = keys.imports_all() if tenant is None else keys.imports_by_tenant(tenant)
    return store.walk(index, after, limit, lambda ids: store.load_many([keys.import_(i) for i in ids]))


def sealed_key(store: Store, import_id: str) -> str | None:
    value = store.r.get(keys.import_secret(import_id))
    return None if value is None else str(value)


def forget_key(pipe: Pipeline, import_id: str) -> None:
    pipe.delete(keys.import_secret(import_id))


# --- one worker at a time per import ---------------------------------------------------------


def acquire_lock(store: Store, import_id: str, token: str, ttl_s: int) -> bool:
    return bool(store.r.set(keys.import_lock(import_id), token, nx=True, ex=ttl_s))


def extend_lock(store: Store, import_id: str, token: str, ttl_s: int) -> bool:
    extended = store.r.eval(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end "
        "return 0",
        1,
        keys.import_lock(import_id),
        token,
        ttl_s,
    )
    return bool(extended)


def release_lock(store: Store, import_id: str, token: str) -> None:
    store.r.eval(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
        1,
        keys.import_lock(import_id),
        token,
    )


# --- files the tenant already holds, by provider file id ---------------------------------------


def imported_file(store: Store, tenant: str, account: str, provider_file_id: str) -> str | None:
    value = store.r.hget(keys.imported_files(tenant), f"{account}|{provider_file_id}")
    return None if value is None else str(value)


def remember_file(pipe: Pipeline, tenant: str, account: str, provider_file_id: str, file_id: str) -> None:
    pipe.hset(keys.imported_files(tenant), f"{account}|{provider_file_id}", file_id)


def queue_file_record(pipe: Pipeline, record: dict[str, Any], created_ms: float) -> None:
    """A new ``uploaded`` file, indexed and watched until its preparation ends (``preparing``)."""
    pipe.set(keys.file(record["id"]), dumps(record))
    pipe.zadd(keys.files_by_tenant(record["tenant"]), {record["id"]: created_ms})
    pipe.zadd(keys.files_all(), {record["id"]: created_ms})
    preparing.queue(pipe, record["id"], created_ms / 1000)


# --- an imported job: everything in one MULTI -------------------------------------------------


def job_exists(store: Store, job_id: str) -> bool:
    return bool(store.r.exists(keys.job(job_id)))


def queue_job(
    pipe: Pipeline,
    job: dict[str, Any],
    events: list[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    metrics: list[dict[str, Any]],
) -> None:
    """Write a whole imported job (replacing any parts a crashed attempt left behind)."""
    job_id = job["id"]
    pipe.delete(keys.job_events(job_id), keys.job_checkpoints(job_id), keys.job_metrics(job_id))
    if events:
        pipe.rpush(keys.job_events(job_id), *[dumps(e) for e in events])
    if checkpoints:
        pipe.zadd(keys.job_checkpoints(job_id), {dumps(c): int(c["step_number"]) for c in checkpoints})
    if metrics:
        pipe.zadd(keys.job_metrics(job_id), {dumps(m): int(m["step"]) for m in metrics})
    pipe.set(keys.job(job_id), dumps(job))
    # Indexed by when the provider created it, so the history keeps its order among other jobs.
    created_ms = float(job["created_at"]) * 1000
    pipe.zadd(keys.jobs_by_tenant(job["tenant"]), {job_id: created_ms})
    pipe.zadd(keys.jobs_all(), {job_id: created_ms})
    if job.get("fine_tuned_model"):
        pipe.hset(keys.imported_models(job["tenant"]), job["fine_tuned_model"], job_id)
    stats.count_new(pipe, job)


def imported_model_job(store: Store, tenant: str, model: str) -> str | None:
    """The imported job that made the fine-tuned model ``model`` of ``tenant``, if any."""
    value = store.r.hget(keys.imported_models(tenant), model)
    return None if value is None else str(value)


# --- distillation: the original model's answers, one hash per imported job ----------------------


def put_distilled(store: Store, import_id: str, job_id: str, index: int, row: dict[str, Any]) -> None:
    store.r.hset(keys.distill_rows(import_id, job_id), str(index), dumps(row))


def distilled(store: Store, import_id: str, job_id: str) -> dict[int, dict[str, Any]]:
    raw: dict[str, str] = store.r.hgetall(keys.distill_rows(import_id, job_id))  # type: ignore[assignment]
    return {int(k): loads(v) for k, v in raw.items()}
