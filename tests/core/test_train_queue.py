"""The train wait queue against real Redis: priority, fairness across tenants, limits, idempotence."""

from __future__ import annotations

import threading

import pytest

from service.core.store import Store
from service.core.store import train_queue as queue
from service.settings import Settings


def drain(store: Store, max_per_tenant: int = 0) -> list[str]:
    order = []
    while (job_id := queue.claim(store, max_per_tenant)) is not None:
        order.append(job_id)
    return order


def test_one_tenant_is_served_in_arrival_order(store: Store) -> None:
    for n in range(5):
        assert queue.push(store, f"j{n}", "acme")
    assert queue.waiting_count(store) == 5
    assert queue.position(store, "j3") == 4
    assert drain(store) == ["j0", "j1", "j2", "j3", "j4"]
    assert queue.waiting_count(store) == 0
    assert queue.running_count(store, "acme") == 5


def test_push_is_idempotent_while_queued_or_training(store: Store) -> None:
    assert queue.push(store, "j1", "acme")
    assert not queue.push(store, "j1", "acme")
    assert queue.claim(store) == "j1"
    assert not queue.push(store, "j1", "acme")  # a duplicate start message while it trains
    assert queue.claim(store) is None
    assert queue.release(store, "j1")
    assert not queue.release(store, "j1")
    assert not queue.is_queued(store, "j1")


def test_higher_priority_goes_first_across_tenants(store: Store) -> None:
    queue.push(store, "a-low", "a", priority=0)
    queue.push(store, "b-low", "b", priority=0)
    queue.push(store, "b-high", "b", priority=5)
    queue.push(store, "a-urgent", "a", priority=10)
    assert drain(store) == ["a-urgent", "b-high", "a-low", "b-low"]


def test_tenants_take_turns_whatever_their_backlog(store: Store) -> None:
    for n in range(6):
        queue.push(store, f"big{n}", "big")
    queue.push(store, "small0", "small")
    queue.push(store, "small1", "small")
    order = drain(store)
    # The small tenant's two jobs are not stuck behind the big tenant's six.
    assert order[:4] == ["big0", "small0", "big1", "small1"]
    assert order[4:] == ["big2", "big3", "big4", "big5"]


def test_a_tenant_that_comes_back_does_not_jump_the_round(store: Store) -> None:
    queue.push(store, "a0", "a")
    queue.push(store, "a1", "a")
    queue.push(store, "b0", "b")
    assert queue.claim(store) == "a0"
    assert queue.claim(store) == "b0"  # b's queue is now empty
    queue.push(store, "b1", "b")  # b returns: served after a, whose turn it is
    assert drain(store) == ["a1", "b1"]


def test_per_tenant_limit_skips_a_busy_tenant_without_blocking_others(store: Store) -> None:
    queue.push(store, "a0", "a")
    queue.push(store, "a1", "a")
    queue.push(store, "b0", "b")
    assert queue.claim(store, max_per_tenant=1) == "a0"
    assert queue.claim(store, max_per_tenant=1) == "b0"
    assert queue.claim(store, max_per_tenant=1) is None  # a holds its one slot; a1 waits
    assert queue.position(store, "a1") == 1
    queue.release(store, "a0")
    assert queue.claim(store, max_per_tenant=1) == "a1"


def test_removed_while_waiting_is_never_claimed(store: Store) -> None:
    queue.push(store, "j1", "acme")
    queue.push(store, "j2", "acme")
    assert queue.release(store, "j1")  # cancelled before it trained
    assert queue.position(store, "j1") is None
    assert drain(store) == ["j2"]


def test_requeue_puts_an_interrupted_job_in_front_of_its_priority(store: Store) -> None:
    queue.push(store, "j1", "acme")
    queue.push(store, "j2", "acme")
    assert queue.claim(store) == "j1"
    queue.requeue(store, "j1", "acme")  # its worker died; it resumes before later arrivals
    assert queue.running_count(store, "acme") == 0
    assert drain(store) == ["j1", "j2"]


def test_priority_out_of_range_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="priority"):
        queue.push(store, "j1", "acme", priority=queue.PRIORITY_MAX + 1)


def test_concurrent_claims_hand_out_each_job_once(store: Store, settings: Settings) -> None:
    for n in range(40):
        queue.push(store, f"j{n}", f"t{n % 4}")
    claimed: list[str] = []
    lock = threading.Lock()

    def trainer() -> None:
        mine = Store.from_url(settings.redis_url)
        while (job_id := queue.claim(mine)) is not None:
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=trainer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(claimed) == sorted(f"j{n}" for n in range(40))


def test_wake_up_is_due_once_per_interval(store: Store) -> None:
    assert queue.wake_due(store, 30.0)
    assert not queue.wake_due(store, 30.0)
