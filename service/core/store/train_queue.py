"""The train wait queue: local jobs waiting for a device, in Tuneline's own Redis keys.

The broker's ``train`` list only carries wake-up messages; which job trains next is decided here,
atomically, so that a lost or deleted broker message never strands a job (beat sends another
wake-up while jobs wait). Order: the highest ``priority`` first; among equal priorities the
tenant served least recently (round-robin, so one tenant's hundred jobs do not starve another's
one); within a tenant, arrival order. An optional per-tenant limit caps how many of a tenant's
jobs hold a training slot at once; a tenant at its limit is skipped, not blocking the others.
"""

from __future__ import annotations

from service.core.store import keys
from service.core.store.base import Store

PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
# score = rank * 10**12 + arrival sequence (the scripts spell 10**12 out): exact in a double.

# KEYS: waiting, waiting_by_tenant, tenants, jobs, running(tenant), seq, served
# ARGV: job_id, tenant, priority rank (0 = highest), front (1: ahead of its priority's arrivals)
_PUSH = """
local front = ARGV[4] == '1'
if not front and redis.call('hexists', KEYS[4], ARGV[1]) == 1 then return 0 end
redis.call('srem', KEYS[5], ARGV[1])
local seq = 0
if not front then seq = redis.call('incr', KEYS[6]) end
local score = tonumber(ARGV[3]) * 1000000000000 + seq
redis.call('hset', KEYS[4], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[1], score, ARGV[1])
redis.call('zadd', KEYS[2], score, ARGV[1])
if redis.call('zscore', KEYS[3], ARGV[2]) == false then
  redis.call('zadd', KEYS[3], tonumber(redis.call('hget', KEYS[7], ARGV[2]) or '0'), ARGV[2])
end
return 1
"""

# KEYS: waiting, tenants, seq, served, lease index
# ARGV: max per tenant (0: no limit), waiting_by_tenant prefix, running prefix,
#       lease token ('' for none), lease ttl ms, lease key prefix, lease expiry (epoch s)
_CLAIM = """
local limit = tonumber(ARGV[1])
local tenants = redis.call('zrange', KEYS[2], 0, -1, 'WITHSCORES')
local best, best_rank, best_ticket, best_seq, best_job
for i = 1, #tenants, 2 do
  local tenant, ticket = tenants[i], tonumber(tenants[i + 1])
  if limit <= 0 or redis.call('scard', ARGV[3] .. tenant) < limit then
    local head = redis.call('zrange', ARGV[2] .. tenant, 0, 0, 'WITHSCORES')
    if #head > 0 then
      local score = tonumber(head[2])
      local rank = math.floor((score + 0.5) / 1000000000000)
      local seq = score - rank * 1000000000000
      if best == nil or rank < best_rank or (rank == best_rank and (ticket < best_ticket
          or (ticket == best_ticket and seq < best_seq))) then
        best, best_rank, best_ticket, best_seq, best_job = tenant, rank, ticket, seq, head[1]
      end
    else
      redis.call('zrem', KEYS[2], tenant)
    end
  end
end
if best == nil then return false end
redis.call('zrem', ARGV[2] .. best, best_job)
redis.call('zrem', KEYS[1], best_job)
redis.call('sadd', ARGV[3] .. best, best_job)
if ARGV[4] ~= '' then
  -- The claimer's lease starts with the claim: a worker that dies before training is reaped.
  redis.call('set', ARGV[6] .. best_job, ARGV[4], 'PX', ARGV[5], 'NX')
  redis.call('zadd', KEYS[5], ARGV[7], best_job)
end
local ticket = redis.call('incr', KEYS[3])
redis.call('hset', KEYS[4], best, ticket)
if redis.call('zcard', ARGV[2] .. best) == 0 then
  redis.call('zrem', KEYS[2], best)
else
  redis.call('zadd', KEYS[2], ticket, best)
end
return best_job
"""

# KEYS: waiting, jobs, tenants; ARGV: job_id, waiting_by_tenant prefix, running prefix
_FORGET = """
local tenant = redis.call('hget', KEYS[2], ARGV[1])
if tenant == false then return 0 end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('srem', ARGV[3] .. tenant, ARGV[1])
redis.call('zrem', ARGV[2] .. tenant, ARGV[1])
if redis.call('zcard', ARGV[2] .. tenant) == 0 then redis.call('zrem', KEYS[3], tenant) end
return 1
"""


def _rank(priority: int) -> int:
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}, got {priority}")
    return PRIORITY_MAX - priority


def _push(store: Store, job_id: str, tenant: str, priority: int, front: bool) -> bool:
    return bool(
        store.r.eval(
            _PUSH,
            7,
            keys.train_queue_waiting(),
            keys.train_waiting_by_tenant(tenant),
            keys.train_waiting_tenants(),
            keys.train_queue_jobs(),
            keys.train_running(tenant),
            keys.train_queue_seq(),
            keys.train_queue_served(),
            job_id,
            tenant,
            _rank(priority),
            "1" if front else "0",
        )
    )


def push(store: Store, job_id: str, tenant: str, priority: int = 0) -> bool:
    """Queue a job for training; False when it is already queued or training (idempotent)."""
    return _push(store, job_id, tenant, priority, front=False)


def requeue(store: Store, job_id: str, tenant: str, priority: int = 0) -> None:
    """A job whose training was interrupted (its lease expired): back in front of its priority."""
    _push(store, job_id, tenant, priority, front=True)


def claim(
    store: Store,
    max_per_tenant: int = 0,
    lease_token: str = "",
    lease_ttl_s: float = 0.0,
    now: float = 0.0,
) -> str | None:
    """Take the next job to train and give its tenant a slot; None when nothing is eligible.

    With ``lease_token`` the job's training lease (store/training.py) is taken in the same step,
    so a worker that dies between the claim and the training leaves a lease that expires and
    beat's reaper puts the job back, instead of a claimed job nobody watches.
    """
    job_id = store.r.eval(
        _CLAIM,
        5,
        keys.train_queue_waiting(),
        keys.train_waiting_tenants(),
        keys.train_queue_seq(),
        keys.train_queue_served(),
        keys.train_leases(),
        max(0, max_per_tenant),
        keys.train_waiting_by_tenant(""),
        keys.train_running(""),
        lease_token,
        max(1, int(lease_ttl_s * 1000)),
        keys.train_lease(""),
        now + lease_ttl_s,
    )
    return None if job_id is None else str(job_id)


def release(store: Store, job_id: str) -> bool:
    """The job left the queue or its slot (finished, failed, paused, cancelled); idempotent."""
    return bool(
        store.r.eval(
            _FORGET,
            3,
            keys.train_queue_waiting(),
            keys.train_queue_jobs(),
            keys.train_waiting_tenants(),
            job_id,
            keys.train_waiting_by_tenant(""),
            keys.train_running(""),
        )
    )


def is_queued(store: Store, job_id: str) -> bool:
    """True while the job waits or holds a slot."""
    return bool(store.r.hexists(keys.train_queue_jobs(), job_id))


def position(store: Store, job_id: str) -> int | None:
    """1-based place among waiting jobs by priority and arrival (fairness may reorder tenants)."""
    rank = store.r.zrank(keys.train_queue_waiting(), job_id)
    return None if rank is None else int(rank) + 1  # type: ignore[arg-type]


def waiting_count(store: Store) -> int:
    return int(store.r.zcard(keys.train_queue_waiting()))  # type: ignore[arg-type]


def running_count(store: Store, tenant: str) -> int:
    return int(store.r.scard(keys.train_running(tenant)))  # type: ignore[arg-type]


def wake_due(store: Store, ttl_s: float) -> bool:
    """True when no wake-up was sent in the last ``ttl_s``: the caller should send one now."""
    return bool(store.r.set(keys.train_wake(), "1", nx=True, px=max(1, int(ttl_s * 1000))))
