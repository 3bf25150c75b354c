"""Local-trainer state in Redis: job leases, device locks, and inference request/result hand-off."""

from __future__ import annotations

from typing import Any

from service.core.store import keys
from service.core.store.base import Store, dumps, loads

# --- job leases: held by the worker training a job, refreshed by its heartbeat ---------------
# The lease key's TTL (Redis's clock) decides expiry; the sorted set only indexes leased jobs so
# beat can find the ones whose key has gone.

_ACQUIRE = """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('zadd', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

_REFRESH = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('zadd', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
redis.call('zrem', KEYS[2], ARGV[2])
return 1
"""

_REAP = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
return redis.call('zrem', KEYS[1], ARGV[1])
"""


def _lease(script: str, store: Store, job_id: str, token: str, ttl_s: float, now: float) -> bool:
    ttl_ms = int(ttl_s * 1000)
    return bool(
        store.r.eval(
            script, 2, keys.train_lease(job_id), keys.train_leases(), token, ttl_ms, now + ttl_s, job_id
        )
    )


def acquire_lease(store: Store, job_id: str, token: str, ttl_s: float, now: float) -> bool:
    """Take the job's lease unless another live worker holds it (ours, taken at the claim, is kept)."""
    return _lease(_ACQUIRE, store, job_id, token, ttl_s, now)


def refresh_lease(store: Store, job_id: str, token: str, ttl_s: float, now: float) -> bool:
    """Extend our lease; False when it expired or was taken (stop training: someone else resumes)."""
    return _lease(_REFRESH, store, job_id, token, ttl_s, now)


def release_lease(store: Store, job_id: str, token: str) -> None:
    store.r.eval(_RELEASE, 2, keys.train_lease(job_id), keys.train_leases(), token, job_id)


def reap_expired_leases(store: Store, now: float, limit: int = 100) -> list[str]:
    """Jobs whose lease key has expired, each removed from the index by exactly one caller."""
    candidates: list[str] = store.r.zrangebyscore(keys.train_leases(), "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    return [
        job_id
        for job_id in candidates
        if store.r.eval(_REAP, 2, keys.train_leases(), keys.train_lease(job_id), job_id)
    ]


def lease_holder(store: Store, job_id: str) -> str | None:
    value = store.r.get(keys.train_lease(job_id))
    return None if value is None else str(value)


# --- device locks: one training job per device --------------------------------------------------

_REFRESH_LOCK = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('pexpire', KEYS[1], ARGV[2])
"""

_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])
"""


def acquire_device(store: Store, device_id: str, token: str, ttl_s: float) -> bool:
    return bool(store.r.set(keys.train_device(device_id), token, nx=True, px=int(ttl_s * 1000)))


def refresh_device(store: Store, device_id: str, token: str, ttl_s: float) -> bool:
    return bool(store.r.eval(_REFRESH_LOCK, 1, keys.train_device(device_id), token, int(ttl_s * 1000)))


def release_device(store: Store, device_id: str, token: str) -> None:
    store.r.eval(_RELEASE_LOCK, 1, keys.train_device(device_id), token)


# --- inference hand-off: the body waits in a key, the answer comes back on a list ------------


def put_request(store: Store, request_id: str, body: dict[str, Any], ttl_s: int) -> None:
    store.r.set(keys.infer_request(request_id), dumps(body), ex=ttl_s)


def take_request(store: Store, request_id: str) -> dict[str, Any] | None:
    """The request body, removed so it is served once; None when the caller gave up (expired)."""
    body: dict[str, Any] | None = loads(store.r.getdel(keys.infer_request(request_id)))  # type: ignore[arg-type]
    return body


def drop_request(store: Store, request_id: str) -> None:
    store.r.delete(keys.infer_request(request_id), keys.infer_result(request_id))


def push_result(store: Store, request_id: str, result: dict[str, Any], ttl_s: int) -> None:
    pipe = store.r.pipeline(transaction=True)
    pipe.rpush(keys.infer_result(request_id), dumps(result))
    pipe.expire(keys.infer_result(request_id), ttl_s)
    pipe.execute()


def wait_result(store: Store, request_id: str, timeout_s: float) -> dict[str, Any] | None:
    """Block for the answer up to ``timeout_s``; None on timeout."""
    raw = store.r.blpop([keys.infer_result(request_id)], timeout=timeout_s)
    if raw is None:
        return None
    result: dict[str, Any] = loads(raw[1])  # type: ignore[index]
    return result
