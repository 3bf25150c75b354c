"""Experiment records and the per-tenant index."""

from __future__ import annotations

from typing import Any

from service.core.store import keys
from service.core.store.base import Store, dumps, loads


def insert(store: Store, record: dict[str, Any]) -> None:
    pipe = store.r.pipeline(transaction=True)
    pipe.set(keys.experiment(record["id"]), dumps(record))
    pipe.zadd(keys.experiments_by_tenant(record["tenant"]), {record["id"]: record["created_at"] * 1000})
    pipe.execute()


def load(store: Store, experiment_id: str) -> dict[str, Any] | None:
    record: dict[str, Any] | None = loads(store.r.get(keys.experiment(experiment_id)))  # type: ignore[arg-type]
    return record


def walk(store: Store, tenant: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A page of one tenant's experiments, newest first."""
    return store.walk(
        keys.experiments_by_tenant(tenant),
        after,
        limit,
        lambda ids: store.load_many([keys.experiment(i) for i in ids]),
    )
