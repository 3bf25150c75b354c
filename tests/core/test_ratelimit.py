"""The per-provider-account poll budget (GCRA) against a real Redis, with a manual clock."""

from __future__ import annotations

from service.core.clock import ManualClock
from service.core.store import ratelimit


def grants(store, clock, account: str, rate: float, burst: int, asks: int) -> int:
    return sum(ratelimit.take(store, account, rate, burst, clock.now()) == 0 for _ in range(asks))


def test_burst_then_the_rate_and_the_wait_says_when(store):
    clock = ManualClock()
    assert grants(store, clock, "sandbox:a", rate=4, burst=4, asks=10) == 4
    wait = ratelimit.take(store, "sandbox:a", 4, 4, clock.now())
    assert 0 < wait <= 0.25
    clock.advance(wait)
    assert grants(store, clock, "sandbox:a", 4, 4, asks=3) == 1
    clock.advance(1.0)  # one second buys `rate` more
    assert grants(store, clock, "sandbox:a", 4, 4, asks=10) == 4


def test_accounts_are_independent_and_zero_is_unlimited(store):
    clock = ManualClock()
    assert grants(store, clock, "openai:https://a", 1, 1, asks=5) == 1
    assert grants(store, clock, "openai:https://b", 1, 1, asks=5) == 1
    assert grants(store, clock, "openai:https://c", 0, 1, asks=50) == 50


def test_long_run_never_exceeds_burst_plus_rate_times_window(store):
    clock = ManualClock()
    granted_at = []
    for _ in range(400):  # 40 simulated seconds of 10 asks per second against 2/s
        if ratelimit.take(store, "azure:x", 2, 2, clock.now()) == 0:
            granted_at.append(clock.now())
        clock.advance(0.1)
    start = granted_at[0]
    assert len(granted_at) <= 2 + 2 * (granted_at[-1] - start) + 1e-9
    assert len(granted_at) >= 2 * 39  # and the budget is used, not starved


def test_a_request_of_several_calls_takes_as_many_tokens(store):
    clock = ManualClock()
    assert ratelimit.take(store, "sandbox:cost", 2, 4, clock.now(), cost=3) == 0
    assert ratelimit.take(store, "sandbox:cost", 2, 4, clock.now(), cost=1) == 0  # 4 calls: the burst
    wait = ratelimit.take(store, "sandbox:cost", 2, 4, clock.now(), cost=1)
    assert wait == 0.5  # the fifth call waits one emission interval
    clock.advance(wait)
    # One call's room lets a request of 3 pass (it never starves behind single calls)...
    assert ratelimit.take(store, "sandbox:cost", 2, 4, clock.now(), cost=3) == 0
    # ...and the two it overdrew are paid for: the next call waits 1.5 s, not 0.5 s.
    assert ratelimit.take(store, "sandbox:cost", 2, 4, clock.now()) == 1.5
