"""Files waiting for their preparation: the preparation watchdog's sorted set of due times.

A file record is written ``uploaded`` together with its entry here (one MULTI); its preparation
pushes the entry ahead while it runs and removes it when the file ends ``processed`` or
``error``. An entry that falls due belongs to a file whose task was lost (a process died between
the record and the enqueue, or the broker refused the message) or whose worker died: beat's scan
sends the task again.
"""

from __future__ import annotations

from service.core.store import base, keys
from service.core.store.base import Pipeline, Store

WATCHDOG_S = 120.0  # a preparation not heard from for this long gets its task again
ATTEMPTS_TTL_S = 7 * 24 * 3600


def queue(pipe: Pipeline, file_id: str, now: float) -> None:
    """In the MULTI that writes the ``uploaded`` record: the file is watched from the start."""
    pipe.zadd(keys.files_preparing(), {file_id: now + WATCHDOG_S})


def heartbeat(store: Store, file_id: str, now: float) -> None:
    """The preparation is alive: its entry (if it still has one) moves ahead."""
    store.r.zadd(keys.files_preparing(), {file_id: now + WATCHDOG_S}, xx=True)


def count_attempt(store: Store, file_id: str) -> int:
    """One more start of the file's preparation; the starts so far."""
    key = keys.file_prepare_attempts(file_id)
    pipe = store.r.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, ATTEMPTS_TTL_S)
    count, _ = pipe.execute()
    return int(count)


def done(store: Store, file_id: str) -> None:
    """The file ended (or is gone): no more watching, no attempts kept."""
    pipe = store.r.pipeline(transaction=True)
    pipe.zrem(keys.files_preparing(), file_id)
    pipe.delete(keys.file_prepare_attempts(file_id))
    pipe.execute()


def claim_due(store: Store, now: float, limit: int = 100) -> list[str]:
    """Files whose entry fell due; each is pushed a watchdog period ahead (a lost claim retries)."""
    return base.claim_due(store, keys.files_preparing(), now, WATCHDOG_S, limit)
