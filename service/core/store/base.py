"""The Redis connection and small JSON helpers shared by the repositories."""

from __future__ import annotations

import json
from typing import Any

import redis


def connect(url: str) -> redis.Redis:
    """A lazily connecting client: building it opens no socket."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
        health_check_interval=30,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


class Store:
    """Holds the client; repositories take a Store so tests can point them anywhere."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(connect(url))

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def page(
        self, index_key: str, after: str | None, limit: int
    ) -> tuple[list[str], bool]:
        """Ids from a sorted-set index, newest first, starting after the cursor id."""
        start = 0
        if after is not None:
            rank = self.r.zrevrank(index_key, after)
            if rank is None:
                return [], False
            start = int(rank) + 1  # type: ignore[arg-type]
        ids: list[str] = self.r.zrevrange(index_key, start, start + limit)  # type: ignore[assignment]
        return ids[:limit], len(ids) > limit
