"""Job counters kept at write time, so ``GET /v1/stats`` and ``/metrics`` never scan the jobs.

Why counters rather than a scan: the jobs index grows without bound (jobs are kept), and a
Prometheus scrape every 15 s over every job record would cost O(jobs) reads each time. Instead
the two writers of a job's state keep three small structures per scope (one tenant, and
``keys.ALL_TENANTS``), inside the same MULTI as the record write, so they can never drift from
the records they count:

- ``stats_counts``: a hash of totals by status, stage and provider (HINCRBY on insert and move);
- ``stats_active``: per non-terminal stage, a sorted set of job ids by creation time, so the
  oldest job of a stage is one ZRANGE away;
- ``stats_failures``: the last ``FAILURES_KEPT`` failures, a capped list of small snapshots.

Reading a scope is then a constant number of round trips whatever the number of jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.core.store import keys
from service.core.store.base import Pipeline, Store, dumps, loads

FAILURES_KEPT = 10
TERMINAL_STAGE = "done"


def _scopes(job: dict[str, Any]) -> tuple[str, str]:
    return job["tenant"], keys.ALL_TENANTS


def count_new(pipe: Pipeline, job: dict[str, Any]) -> None:
    """Count a freshly inserted job (inside the insert's MULTI)."""
    for scope in _scopes(job):
        counts = keys.stats_counts(scope)
        pipe.hincrby(counts, "total", 1)
        pipe.hincrby(counts, f"status:{job['status']}", 1)
        pipe.hincrby(counts, f"stage:{job['stage']}", 1)
        pipe.hincrby(counts, f"provider:{job['provider']}", 1)
        if job["stage"] != TERMINAL_STAGE:  # an imported job arrives already ended
            pipe.zadd(keys.stats_active(scope, job["stage"]), {job["id"]: float(job["created_at"])})


def count_move(pipe: Pipeline, job: dict[str, Any], old_status: str, old_stage: str) -> None:
    """Move a job between counters after a transition (inside the transition's MULTI)."""
    for scope in _scopes(job):
        counts = keys.stats_counts(scope)
        if old_status != job["status"]:
            pipe.hincrby(counts, f"status:{old_status}", -1)
            pipe.hincrby(counts, f"status:{job['status']}", 1)
        if old_stage != job["stage"]:
            pipe.hincrby(counts, f"stage:{old_stage}", -1)
            pipe.hincrby(counts, f"stage:{job['stage']}", 1)
        pipe.zrem(keys.stats_active(scope, old_stage), job["id"])
        if job["stage"] != TERMINAL_STAGE:
            pipe.zadd(keys.stats_active(scope, job["stage"]), {job["id"]: float(job["created_at"])})
        if job["status"] == "failed" and old_status != "failed":
            failures = keys.stats_failures(scope)
            snapshot = {
                "id": job["id"],
                "created_at": job["created_at"],
                "finished_at": job.get("finished_at"),
                "provider": job["provider"],
                "error": job.get("error"),
            }
            pipe.lpush(failures, dumps(snapshot))
            pipe.ltrim(failures, 0, FAILURES_KEPT - 1)


def read(store: Store, scope: str, active_stages: Iterable[str]) -> dict[str, Any]:
    """Counts, the oldest active job per stage, and recent failures of one scope (one round trip)."""
    stages = list(active_stages)
    pipe = store.r.pipeline(transaction=False)
    pipe.hgetall(keys.stats_counts(scope))
    for stage in stages:
        pipe.zrange(keys.stats_active(scope, stage), 0, 0, withscores=True)
    pipe.lrange(keys.stats_failures(scope), 0, FAILURES_KEPT - 1)
    results = pipe.execute()
    counts: dict[str, str] = results[0]
    oldest = {stage: found[0] for stage, found in zip(stages, results[1:-1], strict=True) if found}
    return {
        "counts": {name: int(value) for name, value in counts.items()},
        "oldest": {stage: (job_id, float(score)) for stage, (job_id, score) in oldest.items()},
        "failures": [loads(raw) for raw in results[-1]],
    }


def queue_depths(broker: Store, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue (LLEN of kombu's list), one round trip."""
    names = list(queues)
    pipe = broker.r.pipeline(transaction=False)
    for name in names:
        pipe.llen(keys.broker_queue(name))
    return {name: int(depth) for name, depth in zip(names, pipe.execute(), strict=True)}
