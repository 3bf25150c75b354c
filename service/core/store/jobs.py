"""Job persistence: records, events, checkpoints, metrics and the poll schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.core.store import keys, stats
from service.core.store.base import Change, Pipeline, Store, claim_due, dumps, loads


def key(job_id: str) -> str:
    """The key of a job's record (for reads batched with other keys, e.g. ``Store.load_many``)."""
    return keys.job(job_id)


def load(store: Store, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] | None = loads(store.r.get(keys.job(job_id)))  # type: ignore[arg-type]
    return job


def read(store: Store, job_id: str) -> dict[str, Any] | None:
    """A job record to show (the API's reads): the same as ``load``, served from the process's
    tracked reads when it keeps them (``Store.tracked``)."""
    tracked = store.tracked
    raw = store.r.get(keys.job(job_id)) if tracked is None else tracked.get(keys.job(job_id))
    job: dict[str, Any] | None = loads(raw)
    return job


def insert(store: Store, job: dict[str, Any], created_ms: float) -> None:
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.job(job["id"]), dumps(job))
    pipe.zadd(keys.jobs_by_tenant(job["tenant"]), {job["id"]: created_ms})
    pipe.zadd(keys.jobs_all(), {job["id"]: created_ms})
    stats.count_new(pipe, job)
    pipe.execute()


def update(store: Store, job_id: str, change: Change) -> dict[str, Any] | None:
    """Read-modify-write of a job record; see ``Store.update_json``."""
    return store.update_json(keys.job(job_id), change)


def walk(
    store: Store,
    tenant: str | None,
    after: str | None,
    limit: int,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of jobs, newest first: one tenant's, or every tenant's when ``tenant`` is None."""
    index = keys.jobs_all() if tenant is None else keys.jobs_by_tenant(tenant)
    return store.walk(index, after, limit, lambda ids: store.load_many([keys.job(j) for j in ids]), keep)


# --- events: a list per job; an event id carries its 1-based sequence number ---------------


def event_id(job_id: str, seq: int) -> str:
    return f"ftevent-{job_id.removeprefix('ftjob-')[:12]}{seq:010d}"


def event_seq(event_id_: str) -> int | None:
    tail = event_id_[-10:]
    return int(tail) if tail.isdigit() else None


def queue_event(pipe: Pipeline, job_id: str, event: dict[str, Any]) -> None:
    """Append inside ``update``'s transaction; the sequence comes from the watched job record."""
    pipe.rpush(keys.job_events(job_id), dumps(event))


def list_events(
    store: Store, job_id: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first; ``after`` is the id of the last event of the previous page."""
    total = int(store.r.llen(keys.job_events(job_id)))  # type: ignore[arg-type]
    top = total
    if after is not None:
        seq = event_seq(after)
        if seq is None:
            return [], False
        top = min(seq - 1, total)
    if top <= 0:
        return [], False
    start = max(top - limit, 0)
    raw: list[str] = store.r.lrange(keys.job_events(job_id), start, top - 1)  # type: ignore[assignment]
    events = [loads(r) for r in reversed(raw)]
    return events, start > 0


def events_since(store: Store, job_id: str, count: int) -> list[dict[str, Any]]:
    """Events after the first ``count`` ones, oldest first (for streaming)."""
    raw: list[str] = store.r.lrange(keys.job_events(job_id), count, -1)  # type: ignore[assignment]
    return [loads(r) for r in raw]


# --- checkpoints and metrics, keyed by step --------------------------------------------------


def has_checkpoint(store: Store, job_id: str, step: int) -> bool:
    return bool(store.r.zcount(keys.job_checkpoints(job_id), step, step))


def put_checkpoint(store: Store, job_id: str, checkpoint: dict[str, Any]) -> bool:
    """Store a checkpoint once per step; returns True when it is new."""
    key = keys.job_checkpoints(job_id)
    step = checkpoint["step_number"]
    if store.r.zcount(key, step, step):
        return False
    store.r.zadd(key, {dumps(checkpoint): step})
    return True


def list_checkpoints(store: Store, job_id: str) -> list[dict[str, Any]]:
    raw: list[str] = store.r.zrevrange(keys.job_checkpoints(job_id), 0, -1)  # type: ignore[assignment]
    return [loads(r) for r in raw]


def put_metrics(store: Store, job_id: str, rows: list[dict[str, Any]]) -> None:
    key = keys.job_metrics(job_id)
    pipe = store.r.pipeline(transaction=True)
    for row in rows:
        step = int(row["step"])
        pipe.zremrangebyscore(key, step, step)
        pipe.zadd(key, {dumps(row): step})
    pipe.execute()


def list_metrics(store: Store, job_id: str) -> list[dict[str, Any]]:
    raw: list[str] = store.r.zrange(keys.job_metrics(job_id), 0, -1)  # type: ignore[assignment]
    return [loads(r) for r in raw]


# --- scheduling: due polls in a sorted set, per-job locks, attempt counters -------------------


def schedule_poll(store: Store, job_id: str, at: float, pipe: Pipeline | None = None) -> None:
    (pipe or store.r).zadd(keys.poll_due(), {job_id: at})


def unschedule_poll(store: Store, job_id: str, pipe: Pipeline | None = None) -> None:
    (pipe or store.r).zrem(keys.poll_due(), job_id)


def claim_due_polls(store: Store, now: float, lease_s: float, limit: int = 200) -> list[str]:
    """Jobs due for a poll; each is pushed ``lease_s`` ahead so a lost poll task retries later."""
    return claim_due(store, keys.poll_due(), now, lease_s, limit)


def poll_due_at(store: Store, job_id: str) -> float | None:
    score = store.r.zscore(keys.poll_due(), job_id)
    return None if score is None else float(score)  # type: ignore[arg-type]


def acquire_lock(store: Store, job_id: str, ttl_s: int, token: str) -> bool:
    return bool(store.r.set(keys.job_lock(job_id), token, nx=True, ex=ttl_s))


def release_lock(store: Store, job_id: str, token: str) -> None:
    # Delete only our own lock (compare-and-delete in one round trip).
    store.r.eval(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
        1,
        keys.job_lock(job_id),
        token,
    )


def bump_attempts(store: Store, job_id: str, stage: str) -> int:
    key = keys.job_attempts(job_id, stage)
    pipe = store.r.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, 7 * 24 * 3600)
    count, _ = pipe.execute()
    return int(count)


def reset_attempts(store: Store, job_id: str, stage: str) -> None:
    store.r.delete(keys.job_attempts(job_id, stage))


# --- provider file reuse by content hash -----------------------------------------------------


def provider_file_for(store: Store, account: str, sha256: str) -> str | None:
    value = store.r.hget(keys.provider_files(account), sha256)
    return None if value is None else str(value)


def remember_provider_file(store: Store, account: str, sha256: str, provider_file_id: str) -> None:
    store.r.hset(keys.provider_files(account), sha256, provider_file_id)


def forget_provider_file(store: Store, account: str, sha256: str) -> None:
    store.r.hdel(keys.provider_files(account), sha256)
