"""The job state machine (DESIGN §5, §9): OpenAI statuses, Tuneline stages, forward-only moves."""

from __future__ import annotations

from service.core.errors import Conflict

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
PAUSED = "paused"

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATUSES = (VALIDATING, QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)

# The paused states. ``pausing``: asked to pause, the local trainer is still saving its
# checkpoint; ``paused``: stopped, the device free; ``provider_paused``: the provider paused it.
PAUSING_STATE = (PAUSED, "pausing")
PAUSED_STATE = (PAUSED, "paused")
PROVIDER_PAUSED_STATE = (PAUSED, "provider_paused")

# (status, stage) in pipeline order; a job only ever moves forward along this list,
# or from any non-terminal state to a terminal one, or along RESUMES.
ORDER: tuple[tuple[str, str], ...] = (
    (VALIDATING, "preparing"),
    (VALIDATING, "uploading"),
    (VALIDATING, "submitting"),
    (VALIDATING, "provider_validating"),
    (QUEUED, "provider_queued"),
    (QUEUED, "train_queued"),
    (RUNNING, "training"),
    # After training: a run asked to pause may still finish (the pause came at its last step),
    # and that move on to finalizing stays forward.
    PAUSING_STATE,
    PAUSED_STATE,
    PROVIDER_PAUSED_STATE,
    (RUNNING, "finalizing"),
    (RUNNING, "evaluating"),
)
_RANK = {state: i for i, state in enumerate(ORDER)}
# A resume is the one move back: a paused local job waits for a device again (and then resumes
# from its checkpoint); a provider's paused job goes back to where the provider runs it.
RESUMES: dict[tuple[str, str], frozenset[tuple[str, str]]] = {
    PAUSED_STATE: frozenset({(QUEUED, "train_queued")}),
    PROVIDER_PAUSED_STATE: frozenset({(QUEUED, "provider_queued"), (RUNNING, "training")}),
}
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
    if target in RESUMES.get(current, ()):
        return True
    if _RANK[target] <= _RANK[current]:
        raise IllegalTransition(f"job cannot move back from {status}/{current[1]} to {to_status}/{to_stage}")
    return True
