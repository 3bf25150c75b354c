"""The one retry policy of the job pipeline: classified errors in, retry-or-fail decisions out.

Backends raise ``BackendError`` classified as transient, ambiguous or permanent (the SDK's errors
are mapped in ``service.core.backends.errors`` only). ``delay`` is pure (its jitter is passed in);
``decide`` is the one place that chooses between another attempt and giving up; the per-stage
delivery counters are bumped and reset here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.backends.base import BackendError
from service.core.store import Store
from service.core.store import jobs as repo

MAX_DELIVERIES = 5  # a stage whose task keeps dying this often fails the job instead of looping


@dataclass(frozen=True)
class Policy:
    """How one stage retries: exponential from ``base_s``, capped at ``cap_s``.

    ``max_attempts``: attempts for transient and ambiguous errors (None: retry for as long as the
    provider keeps saying "later", e.g. while polling a job it runs). ``permanent_attempts``: how
    many permanent errors in a row the stage tolerates (polling shrugs off a blip).
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    max_attempts: int | None = 8
    permanent_attempts: int = 1


STAGE = Policy(base_s=1.0, cap_s=60.0, max_attempts=8)
SUBMIT = Policy(base_s=1.0, cap_s=30.0, max_attempts=8)
CANCEL = Policy(base_s=5.0, cap_s=60.0, max_attempts=8)
POLL = Policy(base_s=1.0, cap_s=60.0, max_attempts=None, permanent_attempts=5)


class RetryLater(Exception):
    """The step should run again after ``delay`` seconds (the task adapter schedules it)."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


def delay(policy: Policy, attempt: int, jitter: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with jitter, Retry-After honoured, capped.

    ``jitter`` in [0, 1) spreads the backoff over its upper half, so jobs refused together do not
    all come back in the same instant.
    """
    backoff = min(policy.cap_s, policy.base_s * 2.0 ** min(attempt, 30))
    spread = backoff * (0.5 + 0.5 * jitter)
    return min(policy.cap_s, max(spread, retry_after or 0.0))


@dataclass(frozen=True)
class Decision:
    """Retry after ``delay`` seconds, or give up: fail with ``code`` and ``message``."""

    retry: bool
    delay: float
    code: str
    message: str


def decide(policy: Policy, error: BackendError, attempt: int, jitter: float) -> Decision:
    """Retry or give up after ``attempt`` earlier failed attempts (0 for the first failure)."""
    if error.kind == "permanent":
        retry = attempt + 1 < policy.permanent_attempts
    else:
        retry = policy.max_attempts is None or attempt + 1 < policy.max_attempts
    if not retry and error.kind != "permanent":
        message = f"gave up after {attempt + 1} attempts: {error.message}"
    else:
        message = error.message
    return Decision(retry, delay(policy, attempt, jitter, error.retry_after), error.code, message)


# --- delivery counters: a stage whose task keeps dying -----------------------------------------


def count_delivery(store: Store, job_id: str, stage: str) -> int:
    """Count one more delivery of ``stage``'s task for the job; the count so far."""
    return repo.bump_attempts(store, job_id, stage)


def reset(store: Store, job_id: str, stage: str) -> None:
    """Forget the stage's deliveries (called by the stage runner only).

    What matters is a retry: the next attempt is a new delivery, not a sign of a crash. A job
    that left the stage never comes back to it (states only move forward), and counters expire.
    """
    repo.reset_attempts(store, job_id, stage)
