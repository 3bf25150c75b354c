"""The job state machine (DESIGN §5, §9): OpenAI statuses, Tuneline stages, forward-only moves."""

from __future__ import annotations

from service.core.errors import Conflict

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATUSES = (VALIDATING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)

# (status, stage) in pipeline order; a job only ever moves forward along this list,
# or from any non-terminal state to a terminal one.
ORDER: tuple[tuple[str, str], ...] = (
    (VALIDATING, "preparing"),
    (VALIDATING, "uploading"),
    (VALIDATING, "submitting"),
    (VALIDATING, "provider_validating"),
    (QUEUED, "provider_queued"),
    (QUEUED, "train_queued"),
    (RUNNING, "training"),
    (RUNNING, "finalizing"),
    (RUNNING, "evaluating"),
)
_RANK = {state: i for i, state in enumerate(ORDER)}
STAGES = (*tuple(dict.fromkeys(stage for _, stage in ORDER)), "done")


class IllegalTransition(Conflict):
    code = "illegal_transition"


def check(current: tuple[str, str], target: tuple[str, str]) -> bool:
    """True when the move is allowed, False when it is a no-op repeat; raises when illegal."""
    if current == target:
        return False
    status, _ = current
    to_status, to_stage = target
    if status in TERMINAL:
        raise IllegalTransition(f"job is already {status}; it cannot become {to_status}")
    if to_status in TERMINAL:
        if to_stage != "done":
            raise IllegalTransition(f"terminal status {to_status} must have stage 'done'")
        return True
    if target not in _RANK:
        raise IllegalTransition(f"unknown state {to_status}/{to_stage}")
    if _RANK[target] <= _RANK[current]:
        raise IllegalTransition(f"job cannot move back from {status}/{current[1]} to {to_status}/{to_stage}")
    return True
