"""The retry schedule driven by a manual clock: 8 attempts over about 28 h, Retry-After honoured."""

from __future__ import annotations

import itertools
import random

import pytest

from service.core.clock import ManualClock
from service.core.webhooks.schedule import (
    JITTER,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER_S,
    SCHEDULE,
    is_exhausted,
    next_attempt_at,
)


def run_until_exhausted(
    clock: ManualClock, rng: random.Random, retry_after_s: float | None = None
) -> list[float]:
    """Attempt, fail, wait for the next due time; return the time of every attempt."""
    times: list[float] = []
    made = 0
    while (due := next_attempt_at(made, clock.now(), retry_after_s if made else None, rng)) is not None:
        assert due >= clock.now()
        clock.advance(due - clock.now())
        times.append(clock.now())
        made += 1
    return times


def test_schedule_is_svix() -> None:
    assert SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert MAX_ATTEMPTS == 8


def test_eight_attempts_over_about_28_hours() -> None:
    clock = ManualClock()
    start = clock.now()
    times = run_until_exhausted(clock, random.Random(7))
    assert len(times) == 8
    assert times[0] == start  # the first attempt is immediate
    total = times[-1] - start
    nominal = sum(SCHEDULE)
    assert nominal == 99_305  # 27.6 h
    assert nominal * (1 - JITTER) <= total <= nominal * (1 + JITTER)
    assert 24 * 3600 < total < 31 * 3600
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, nominal_gap in zip(gaps, SCHEDULE[1:], strict=True):
        assert nominal_gap * (1 - JITTER) <= gap <= nominal_gap * (1 + JITTER)


def test_jitter_spreads_receivers_and_is_reproducible_by_seed() -> None:
    now = 1_000.0
    a = [next_attempt_at(3, now, None, random.Random(seed)) for seed in range(20)]
    b = [next_attempt_at(3, now, None, random.Random(seed)) for seed in range(20)]
    assert a == b
    assert len(set(a)) == 20


def test_none_after_the_last_attempt() -> None:
    rng = random.Random(1)
    assert next_attempt_at(MAX_ATTEMPTS - 1, 0.0, None, rng) is not None
    assert next_attempt_at(MAX_ATTEMPTS, 0.0, None, rng) is None
    assert next_attempt_at(MAX_ATTEMPTS + 5, 0.0, 60.0, rng) is None
    assert not is_exhausted(MAX_ATTEMPTS - 1) and is_exhausted(MAX_ATTEMPTS)
    with pytest.raises(ValueError):
        next_attempt_at(-1, 0.0, None, rng)


def test_retry_after_pushes_later_but_never_earlier() -> None:
    now = 10_000.0
    # After attempt 1 the schedule says ~5 s; the receiver asks for 10 minutes.
    due = next_attempt_at(1, now, 600.0, random.Random(3))
    assert due == now + 600.0
    # After attempt 4 the schedule says ~2 h; a 60 s Retry-After does not hurry it.
    due = next_attempt_at(4, now, 60.0, random.Random(3))
    assert due is not None and due - now >= 7200 * (1 - JITTER)
    # Zero or negative values mean nothing.
    assert next_attempt_at(2, now, 0.0, random.Random(3)) == next_attempt_at(2, now, None, random.Random(3))


def test_retry_after_is_capped() -> None:
    due = next_attempt_at(1, 0.0, 10 * 24 * 3600.0, random.Random(3))
    assert due == MAX_RETRY_AFTER_S


def test_retry_after_keeps_the_attempt_count() -> None:
    clock = ManualClock()
    times = run_until_exhausted(clock, random.Random(11), retry_after_s=900.0)
    assert len(times) == MAX_ATTEMPTS
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] == 900.0 and gaps[1] == 900.0  # 5 s and ~5 min both pushed to 15 min
    assert gaps[2] >= 1800 * (1 - JITTER)
