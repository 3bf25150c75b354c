"""The state machine's pause and resume moves: the one way back is a resume."""

from __future__ import annotations

import pytest

from service.core.jobs import states

TRAINING = (states.RUNNING, "training")


def test_pause_is_forward_and_resume_is_the_only_way_back() -> None:
    assert states.check(TRAINING, states.PAUSING_STATE)
    assert states.check(states.PAUSING_STATE, states.PAUSED_STATE)
    assert states.check(states.PAUSED_STATE, (states.QUEUED, "train_queued"))
    assert states.check(TRAINING, states.PROVIDER_PAUSED_STATE)
    assert states.check(states.PROVIDER_PAUSED_STATE, TRAINING)
    assert states.check(states.PROVIDER_PAUSED_STATE, (states.QUEUED, "provider_queued"))
    # A run asked to pause that finished anyway moves on; a paused job can be cancelled.
    assert states.check(states.PAUSING_STATE, (states.RUNNING, "finalizing"))
    assert states.check(states.PAUSED_STATE, (states.CANCELLED, "done"))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (states.PAUSING_STATE, (states.QUEUED, "train_queued")),  # not before its checkpoint is saved
        (states.PAUSED_STATE, TRAINING),  # a local job waits for a device first
        (states.PAUSED_STATE, states.PAUSING_STATE),
        ((states.RUNNING, "finalizing"), states.PAUSING_STATE),
        ((states.QUEUED, "train_queued"), (states.VALIDATING, "preparing")),
    ],
)
def test_other_moves_back_stay_illegal(current: tuple[str, str], target: tuple[str, str]) -> None:
    with pytest.raises(states.IllegalTransition):
        states.check(current, target)
