"""The retry policy as pure functions: the delay, and the choice between retrying and failing."""

from __future__ import annotations

import pytest

from service.core.backends.base import BackendError
from service.core.jobs import retry

POLICY = retry.Policy(base_s=1.0, cap_s=30.0, max_attempts=4)


def error(kind: str, retry_after: float | None = None) -> BackendError:
    return BackendError("boom", kind=kind, code="provider_http_503", retry_after=retry_after)  # type: ignore[arg-type]


def test_delays_grow_exponentially_within_the_jitter_band_and_are_capped():
    for attempt in range(8):
        low, high = retry.delay(POLICY, attempt, 0.0), retry.delay(POLICY, attempt, 0.999)
        backoff = min(30.0, 2.0**attempt)
        assert low == pytest.approx(backoff / 2) and backoff / 2 <= high <= backoff
    assert [retry.delay(POLICY, a, 0.5) for a in range(4)] == [0.75, 1.5, 3.0, 6.0]
    assert retry.delay(POLICY, 40, 0.999) <= 30.0


def test_retry_after_is_honoured_but_capped():
    assert retry.delay(POLICY, 0, 0.0, retry_after=12.0) == 12.0
    assert retry.delay(POLICY, 4, 0.0, retry_after=1.0) == 8.0  # never sooner than the backoff
    assert retry.delay(POLICY, 0, 0.0, retry_after=3600.0) == 30.0


def test_transient_and_ambiguous_errors_retry_a_bounded_number_of_times():
    for kind in ("transient", "ambiguous"):
        decisions = [retry.decide(POLICY, error(kind), attempt, 0.5) for attempt in range(4)]
        assert [d.retry for d in decisions] == [True, True, True, False]
        assert (
            decisions[-1].code == "provider_http_503" and "gave up after 4 attempts" in decisions[-1].message
        )


def test_a_permanent_error_fails_at_once_unless_the_stage_tolerates_some():
    assert not retry.decide(POLICY, error("permanent"), 0, 0.5).retry
    tolerant = retry.Policy(max_attempts=None, permanent_attempts=3)
    assert [retry.decide(tolerant, error("permanent"), a, 0.5).retry for a in range(3)] == [True, True, False]
    assert retry.decide(tolerant, error("transient"), 1000, 0.5).retry  # polling never gives up on "later"
