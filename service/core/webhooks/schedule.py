"""Svix's webhook retry schedule with jitter and Retry-After, as pure functions of a clock."""

from __future__ import annotations

import random
from typing import Final

# Delay before each attempt, in seconds: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
SCHEDULE: Final[tuple[int, ...]] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS: Final = len(SCHEDULE)
JITTER: Final = 0.1  # each delay is scaled by a factor drawn from [1 - JITTER, 1 + JITTER]
MAX_RETRY_AFTER_S: Final = 24 * 3600.0


def next_attempt_at(
    attempt_number: int,
    now: float,
    retry_after_s: float | None,
    rng: random.Random,
) -> float | None:
    """When to make the next attempt, or None when every attempt has been spent.

    ``attempt_number`` is how many attempts have been made so far (0 before the first, which is
    due ``now``). A receiver's ``Retry-After`` can only push the next attempt later, never
    earlier, and is capped at ``MAX_RETRY_AFTER_S``; it does not add attempts.
    """
    if attempt_number < 0:
        raise ValueError("attempt_number must be >= 0")
    if attempt_number >= MAX_ATTEMPTS:
        return None
    delay = SCHEDULE[attempt_number] * rng.uniform(1.0 - JITTER, 1.0 + JITTER)
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(float(retry_after_s), MAX_RETRY_AFTER_S))
    return now + delay


def is_exhausted(attempt_number: int) -> bool:
    """True once ``attempt_number`` attempts leave no further one in the schedule."""
    return attempt_number >= MAX_ATTEMPTS
