"""Persistence of evaluation rows (per job and target) and the lease of a running evaluation."""

from __future__ import annotations

from typing import Any

from service.core.store import keys
from service.core.store.base import Store, dumps, loads

_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def acquire_lease(store: Store, job_id: str, stage: str, ttl_s: float, token: str) -> bool:
    return bool(store.r.set(keys.job_stage_lease(job_id, stage), token, nx=True, px=int(ttl_s * 1000)))


def renew_lease(store: Store, job_id: str, stage: str, ttl_s: float, token: str) -> bool:
    return bool(store.r.eval(_RENEW, 1, keys.job_stage_lease(job_id, stage), token, int(ttl_s * 1000)))


def release_lease(store: Store, job_id: str, stage: str, token: str) -> None:
    store.r.eval(_RELEASE, 1, keys.job_stage_lease(job_id, stage), token)


def put_row(store: Store, job_id: str, target: str, index: int, row: dict[str, Any]) -> None:
    store.r.hset(keys.job_eval_rows(job_id, target), str(index), dumps(row))


def rows(store: Store, job_id: str, target: str) -> dict[int, dict[str, Any]]:
    """Every stored row of one evaluation target, by example index."""
    raw: dict[str, str] = store.r.hgetall(keys.job_eval_rows(job_id, target))  # type: ignore[assignment]
    return {int(k): loads(v) for k, v in raw.items()}


def count(store: Store, job_id: str, target: str) -> int:
    return int(store.r.hlen(keys.job_eval_rows(job_id, target)))  # type: ignore[arg-type]
