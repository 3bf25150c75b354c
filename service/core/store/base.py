"""The Redis connection and small JSON helpers shared by the repositories."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from service.core.store.tracked import TrackedReads


def connect(url: str) -> redis.Redis:
    """A lazily connecting client: building it opens no socket."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
    )


Pipeline = Any  # redis.client.Pipeline in MULTI mode; untyped upstream
Change = Callable[[dict[str, Any], Pipeline], "dict[str, Any] | None"]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def loads(raw: str | bytes | None) -> Any:
    return None if raw is None else json.loads(raw)


class Store:
    """Holds the client; repositories take a Store so tests can point them anywhere.

    ``tracked``, when an API process sets it (``tracked.TrackedReads``), serves the reads that
    ask for it (``jobs.read``) from memory while Redis says their keys have not changed.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.tracked: TrackedReads | None = None

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(connect(url))

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def page(self, index_key: str, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Ids from a sorted-set index, newest first, starting after the cursor id."""
        start = 0
        if after is not None:
            rank = self.r.zrevrank(index_key, after)
            if rank is None:
                return [], False
            start = int(rank) + 1  # type: ignore[arg-type]
        ids: list[str] = self.r.zrevrange(index_key, start, start + limit)  # type: ignore[assignment]
        return ids[:limit], len(ids) > limit

    def load_many(self, keys: list[str]) -> list[Any]:
        """JSON values of ``keys`` in one round trip (None where a key is missing)."""
        return [loads(raw) for raw in self.r.mget(keys)] if keys else []  # type: ignore[union-attr]

    def walk(
        self,
        index_key: str,
        after: str | None,
        limit: int,
        load_many: Callable[[list[str]], list[Any]],
        keep: Callable[[Any], bool] | None = None,
    ) -> tuple[list[Any], bool]:
        """A page of an index, newest first, keeping only items ``keep`` accepts.

        Reads from the cursor in batches until ``limit`` + 1 items matched, so ``has_more`` is exact.
        """
        out: list[Any] = []
        cursor = after
        while len(out) <= limit:
            ids, more = self.page(index_key, cursor, limit + 1)
            out.extend(item for item in load_many(ids) if item is not None and (keep is None or keep(item)))
            if not more or not ids:
                break
            cursor = ids[-1]
        return out[:limit], len(out) > limit

    def update_json(self, key: str, change: Change) -> dict[str, Any] | None:
        """Optimistic read-modify-write of one JSON value (WATCH/MULTI, retried on a race).

        ``change`` gets the current value and the pipeline (already in MULTI, so it may queue more
        commands that commit atomically with the write) and returns the new value, or None to write
        nothing. Returns the value now stored, or None when the key does not exist.
        """
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = loads(pipe.get(key))
                    if current is None:
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    new = change(current, pipe)
                    if new is None:
                        pipe.reset()
                        return current  # type: ignore[no-any-return]
                    pipe.set(key, dumps(new))
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue


def claim_due(store: Store, key: str, now: float, lease_s: float, limit: int) -> list[str]:
    """Members of the due-time sorted set ``key`` due by ``now``; each claimed one is pushed
    ``lease_s`` ahead, so a task lost after its claim is due again then (a watchdog's lease)."""
    due: list[str] = store.r.zrangebyscore(key, "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    claimed = []
    for member in due:
        # XX+GT: only move forward a member still present; a concurrent claim loses the race.
        if store.r.zadd(key, {member: now + lease_s}, xx=True, gt=True, ch=True):
            claimed.append(member)
    return claimed
