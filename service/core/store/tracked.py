"""Reads served from this process for as long as Redis says the value has not changed.

Redis (6 and later) tells a connection that ran ``CLIENT TRACKING ON BCAST PREFIX p`` about every
change to any key under ``p``: an ``invalidate`` push on RESP3, redis-py's default protocol.
``TrackedReads`` keeps one such connection per process, and a value it read stays in memory until
that push names its key (or the database is flushed). Every ``get`` first takes whatever pushes
have arrived (a poll of the socket with no wait), so a read that starts after a write was
acknowledged, in this process or any other, never sees the value from before it: Redis queues the
push before the writer's reply and sends both in the same turn of its event loop.

What could make a value outlive its key's change is covered by falling back to Redis:
- the tracking connection fails or closes (Redis restarted, ``CLIENT KILL``, an idle timeout):
  every value is dropped and reads go to Redis until a new connection tracks again;
- a fork (gunicorn, Celery prefork): the child starts empty with a connection of its own;
- anything not foreseen (a failover that leaves the connection on the old primary): no value is
  served after ``max_age_s``, however quiet its key.

A read that raced a change of its key (the push arrived between sending the GET and keeping its
answer) is returned but not kept.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

CONNECTION_NAME = "tuneline-read-tracking"


class TrackedReads:
    def __init__(
        self,
        client: redis.Redis,
        prefixes: str | tuple[str, ...],
        max_age_s: float,
        max_entries: int = 10_000,
        retry_s: float = 5.0,
    ) -> None:
        self._client = client
        self._prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
        self._max_age_s = max_age_s
        self._max_entries = max_entries
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}  # key -> (read at, value)
        self._reading: dict[str, object] = {}  # key -> the token of a read in flight
        self._conn: Any = None  # redis.connection.Connection while tracking
        self._fd: int | None = None  # its socket's descriptor, while tracking
        self._pid = os.getpid()
        self._retry_at = 0.0
        self._refused = False
        # Counters for tests and diagnostics (hits are counted without the lock: near, not exact,
        # under concurrent reads).
        self.stats = {"hits": 0, "misses": 0, "invalidations": 0, "resets": 0}

    def get(self, key: str, max_age_s: float | None = None) -> Any:
        """``GET key`` (the client's decoding), from memory when Redis has not changed it since.

        ``max_age_s`` tightens the process-wide bound for this read (an API key's is shorter).
        """
        now = time.monotonic()
        if not self._current(now):
            return self._client.get(key)
        held = self._values.get(key)  # no lock: one dict read, and pushes were applied just now
        limit = self._max_age_s if max_age_s is None else min(max_age_s, self._max_age_s)
        if held is not None and now - held[0] < limit:
            self.stats["hits"] += 1
            return held[1]
        with self._lock:
            token: object | None = None
            if self._conn is not None:  # else lost since the check: a read not to keep
                self.stats["misses"] += 1
                token = self._reading[key] = object()
        value = self._client.get(key)  # never under the lock: the other threads would queue
        if token is None:
            return value
        with self._lock:
            if self._reading.get(key) is token:  # no push for this key since the read began
                del self._reading[key]
                if value is not None:
                    if len(self._values) >= self._max_entries:
                        del self._values[next(iter(self._values))]  # the oldest
                    self._values[key] = (now, value)
        return value

    def _current(self, now: float) -> bool:
        """Whether values may be served: tracking, with every push that has arrived applied.

        The usual answer takes no lock and reads nothing: a poll of the tracking socket finds
        nothing waiting. The lock is taken only to read and apply pushes (only one thread may read
        the socket), to connect, or after a fork: a lock held across the socket check made the
        request threads of a gunicorn worker queue behind one another.
        """
        fd = self._fd
        if fd is not None and self._pid == os.getpid():
            poller = select.poll()  # one per call: a poll object refuses concurrent use
            poller.register(fd, select.POLLIN | select.POLLPRI)
            # Nothing arrived (a closed or failed socket polls as ready), and no other thread is
            # applying pushes it has already taken off the socket: checked after the poll, so a
            # push read by another thread before the poll has been applied by now.
            if not poller.poll(0) and not self._lock.locked():
                return True
        with self._lock:
            return self._tracking(now)

    def close(self) -> None:
        with self._lock:
            self._reset()

    # -- the tracking connection (called with the lock held) --

    def _tracking(self, now: float) -> bool:
        """Whether values may be served: connected (or connected now) and caught up with Redis."""
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours to use
            self._pid = os.getpid()
            self._conn, self._fd = None, None
            self._values.clear()
            self._reading.clear()
        if self._conn is None:
            if now < self._retry_at:
                return False
            self._connect(now)
            return self._conn is not None
        try:
            while self._conn.can_read(timeout=0):
                self._conn.read_response(push_request=True, timeout=0, disconnect_on_error=False)
        except redis.TimeoutError:
            pass  # part of a push: the parser keeps it, the rest is read next time
        except (redis.RedisError, OSError) as exc:
            log.warning("read cache: tracking connection lost (%s); reading from Redis", type(exc).__name__)
            self._reset()
            self._retry_at = now + self._retry_s
            return False
        return True

    def _connect(self, now: float) -> None:
        conn: Any = self._client.connection_pool.make_connection()
        try:
            conn.connect()
            # redis-py's own client-side cache hands invalidation pushes over the same way; it
            # needs Redis 7.4, CLIENT TRACKING (all this uses) is in Redis 6.
            conn._parser.set_invalidation_push_handler(self._invalidated)
            for command in (
                ("CLIENT", "SETNAME", CONNECTION_NAME),  # so CLIENT LIST shows what it is
                ("CLIENT", "TRACKING", "ON", "BCAST", *(w for p in self._prefixes for w in ("PREFIX", p))),
            ):
                conn.send_command(*command)
                reply = conn.read_response()
                if reply not in ("OK", b"OK"):
                    raise redis.ResponseError(f"{' '.join(command[:2])} answered {reply!r}")
        except (redis.RedisError, OSError) as exc:
            # Said once per process: a Redis that refuses tracking (an ACL without CLIENT) would
            # otherwise log it every retry.
            level = logging.DEBUG if self._refused else logging.WARNING
            log.log(level, "read cache off for %.0f s: cannot track keys (%s)", self._retry_s, exc)
            self._refused = True
            conn.disconnect()
            self._retry_at = now + self._retry_s
            return
        self._conn, self._fd = conn, conn._sock.fileno()

    def _invalidated(self, push: list[Any]) -> None:
        keys = push[1]
        self.stats["invalidations"] += 1
        if keys is None:  # FLUSHDB / FLUSHALL
            self._values.clear()
            self._reading.clear()
            return
        for key in keys:
            key = key.decode() if isinstance(key, bytes) else key
            self._values.pop(key, None)
            self._reading.pop(key, None)

    def _reset(self) -> None:
        self._values.clear()
        self._reading.clear()
        if self._conn is not None:
            self._fd = None
            self._conn.disconnect()
            self._conn = None
            self.stats["resets"] += 1
