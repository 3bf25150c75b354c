"""TrackedReads against a real redis-server: a value is kept only while Redis says it is current."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis

from service.core.store import Store
from service.core.store.tracked import CONNECTION_NAME, TrackedReads
from tests.support.procs import RedisServer

PREFIX = "t:job:"


@pytest.fixture
def other(store: Store) -> redis.Redis:
    """A second client: the writes of another process."""
    kw = store.r.connection_pool.connection_kwargs
    return redis.Redis(host=kw["host"], port=kw["port"], db=kw["db"], decode_responses=True)


def _gets(client: redis.Redis) -> int:
    """GET commands the server has run (all clients)."""
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_a_second_read_is_served_from_memory_and_a_write_is_seen_by_the_next_read(
    store: Store, other: redis.Redis
) -> None:
    reads = TrackedReads(store.r, PREFIX, max_age_s=60)
    other.set(PREFIX + "a", "v0")
    assert reads.get(PREFIX + "a") == "v0"
    before = _gets(other)
    assert reads.get(PREFIX + "a") == "v0"
    assert _gets(other) == before, "the second read went to Redis"
    for i in range(1, 300):  # every acknowledged write is visible to the very next read
        other.set(PREFIX + "a", f"v{i}")
        assert reads.get(PREFIX + "a") == f"v{i}"
        assert reads.get(PREFIX + "a") == f"v{i}"
    assert reads.stats["hits"] >= 299
    other.delete(PREFIX + "a")
    assert reads.get(PREFIX + "a") is None


def test_keys_outside_the_prefix_are_read_from_redis_every_time(store: Store, other: redis.Redis) -> None:
    reads = TrackedReads(store.r, PREFIX, max_age_s=60)
    other.set(PREFIX + "a", "1")
    reads.get(PREFIX + "a")
    other.set("elsewhere", "x")
    before = _gets(other)
    assert reads.get(PREFIX + "a") == "1"  # an unrelated write does not drop it
    assert _gets(other) == before


def test_a_flushed_database_drops_every_value(store: Store, other: redis.Redis) -> None:
    reads = TrackedReads(store.r, PREFIX, max_age_s=60)
    other.set(PREFIX + "a", "1")
    assert reads.get(PREFIX + "a") == "1"
    other.flushdb()
    assert reads.get(PREFIX + "a") is None


def test_a_value_changed_while_it_was_read_is_not_kept(store: Store, other: redis.Redis) -> None:
    """The push for a change that lands between the GET and keeping its answer, taken by another
    thread's read in that gap: the old answer must not be kept."""
    other.set(PREFIX + "a", "old")
    other.set(PREFIX + "b", "b")

    class Racing:
        """The client, with a write and another thread's read right after the GET's answer."""

        connection_pool = store.r.connection_pool

        def get(self, key: str) -> Any:
            value = store.r.get(key)
            if key == PREFIX + "a" and value == "old":
                other.set(PREFIX + "a", "new")
                reader = threading.Thread(target=reads.get, args=(PREFIX + "b",))
                reader.start()  # its read takes the push for "a" first
                reader.join()
            return value

    reads = TrackedReads(Racing(), PREFIX, max_age_s=60)  # type: ignore[arg-type]
    reads.get(PREFIX + "b")  # tracking on
    assert reads.get(PREFIX + "a") == "old"  # what Redis answered; a read that raced
    assert reads.get(PREFIX + "a") == "new"


def test_a_lost_tracking_connection_falls_back_to_redis_then_tracks_again(
    store: Store, other: redis.Redis
) -> None:
    reads = TrackedReads(store.r, PREFIX, max_age_s=60, retry_s=0.2)
    other.set(PREFIX + "a", "1")
    assert reads.get(PREFIX + "a") == "1"
    assert _kill(other, reads) == 1
    other.set(PREFIX + "a", "2")  # no push can reach this process now
    assert reads.get(PREFIX + "a") == "2"
    assert reads.stats["resets"] == 1
    time.sleep(0.3)
    assert reads.get(PREFIX + "a") == "2"  # tracking again (a miss fills it)
    before = _gets(other)
    assert reads.get(PREFIX + "a") == "2"
    assert _gets(other) == before
    other.set(PREFIX + "a", "3")
    assert reads.get(PREFIX + "a") == "3"


def _kill(client: redis.Redis, reads: TrackedReads) -> int:
    """CLIENT KILL the tracking connection of ``reads`` (found by its name and address)."""
    host, port = reads._conn._sock.getsockname()[:2]
    ids = [
        c["id"]
        for c in client.client_list()
        if (c.get("name"), c["addr"]) == (CONNECTION_NAME, f"{host}:{port}")
    ]
    return sum(int(client.execute_command("CLIENT", "KILL", "ID", i)) for i in ids)  # type: ignore[arg-type]


def test_a_value_is_not_served_past_its_age(store: Store, other: redis.Redis) -> None:
    reads = TrackedReads(store.r, PREFIX, max_age_s=0.1)
    other.set(PREFIX + "a", "1")
    reads.get(PREFIX + "a")
    time.sleep(0.15)
    before = _gets(other)
    assert reads.get(PREFIX + "a") == "1"
    assert _gets(other) == before + 1


def test_a_read_may_ask_for_a_shorter_age_and_several_prefixes_are_tracked(
    store: Store, other: redis.Redis
) -> None:
    """Two prefixes (job records and API keys, as the API tracks them): a write under either is
    seen by the next read; a read's own ``max_age_s`` bounds it below the process-wide one."""
    reads = TrackedReads(store.r, (PREFIX, "t:key:"), max_age_s=60)
    other.set("t:key:k1", "live")
    assert reads.get("t:key:k1") == "live"
    before = _gets(other)
    assert reads.get("t:key:k1", max_age_s=5) == "live"
    assert _gets(other) == before, "the second read went to Redis"
    other.set("t:key:k1", "revoked")
    assert reads.get("t:key:k1", max_age_s=5) == "revoked"
    time.sleep(0.15)
    before = _gets(other)
    assert reads.get("t:key:k1", max_age_s=0.1) == "revoked"
    assert _gets(other) == before + 1, "a value older than the read's bound was served"


def test_a_redis_that_refuses_tracking_is_read_every_time(tmp_path: Any) -> None:
    server = RedisServer(tmp_path / "acl").start()
    try:
        admin = redis.Redis(port=server.port)
        admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-client")
        client = redis.Redis.from_url(f"redis://app:pw@127.0.0.1:{server.port}/0", decode_responses=True)
        reads = TrackedReads(client, PREFIX, max_age_s=60)
        admin.set(PREFIX + "a", "1")
        assert reads.get(PREFIX + "a") == "1"
        admin.set(PREFIX + "a", "2")
        assert reads.get(PREFIX + "a") == "2"
        assert reads.stats["hits"] == 0
    finally:
        server.stop()


def test_a_forked_child_tracks_on_a_connection_of_its_own(store: Store, other: redis.Redis) -> None:
    reads = TrackedReads(store.r, PREFIX, max_age_s=60)
    other.set(PREFIX + "a", "1")
    assert reads.get(PREFIX + "a") == "1"
    other.set(PREFIX + "a", "2")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=lambda: queue.put((reads.get(PREFIX + "a"), reads.stats["misses"])))
    child.start()
    assert queue.get(timeout=10) == ("2", 2)  # its own first read went to Redis
    child.join(10)
    assert reads.get(PREFIX + "a") == "2"


def test_concurrent_readers_never_hide_a_write_from_the_next_read(store: Store, other: redis.Redis) -> None:
    """Four threads read without pause (as a gunicorn worker's threads do) while a fifth writes
    and reads its own write back: each read after a write must see it."""
    reads = TrackedReads(store.r, PREFIX, max_age_s=60)
    other.set(PREFIX + "a", "0")
    stop = threading.Event()
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            reads.get(PREFIX + "a")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for i in range(1, 500):
            other.set(PREFIX + "a", str(i))
            seen = reads.get(PREFIX + "a")
            if seen != str(i):
                failures.append(f"wrote {i}, read {seen}")
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert failures == []
    assert reads.stats["hits"] > 500  # the readers were served from memory meanwhile
