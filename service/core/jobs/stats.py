"""Use case: the ops summary of jobs (``GET /v1/stats``, and the figures ``/metrics`` exports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.core.auth import Principal
from service.core.jobs import states
from service.core.store import Store, keys
from service.core.store import stats as counters
from service.settings import PROVIDERS

ACTIVE_STAGES = tuple(stage for stage in states.STAGES if stage != counters.TERMINAL_STAGE)


def summary(
    store: Store,
    broker: Store,
    principal: Principal,
    queues: Sequence[str],
    now: float,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Counts by status, stage and provider; queue depths (ops only); oldest active job per stage.

    Members see their own tenant; ops see every tenant, or one with ``tenant``. Every status,
    stage and known provider is listed, zeros included, so a dashboard's series never vanish.
    """
    scope = principal.scope(tenant)
    found = counters.read(store, keys.ALL_TENANTS if scope is None else scope, ACTIVE_STAGES)
    counts = found["counts"]

    def by(prefix: str, names: Sequence[str]) -> dict[str, int]:
        out = {name: 0 for name in names}
        for field, value in counts.items():
            if field.startswith(prefix):
                out[field[len(prefix) :]] = value
        return out

    return {
        "object": "stats",
        "tenant": scope,
        "jobs": {
            "total": counts.get("total", 0),
            "by_status": by("status:", states.STATUSES),
            "by_stage": by("stage:", states.STAGES),
            "by_provider": by("provider:", PROVIDERS),
        },
        "queues": counters.queue_depths(broker, queues) if principal.is_ops else {},
        "oldest_active": {
            stage: {"id": job_id, "created_at": int(created), "age_s": round(max(now - created, 0.0), 1)}
            for stage, (job_id, created) in found["oldest"].items()
        },
        "recent_failures": found["failures"],
    }
