"""A waiting local job whose train message the broker lost (the ``train`` list deleted) still trains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.jobs.stages.common import WATCHDOG_S
from tests.integration.conftest import Stack, make_local_stack
from tests.integration.test_local_jobs import chat_rows, create_local, sdk, upload, wait_terminal
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def no_trainer(tmp_path: Path, secret_key: str, local_base_model: Path) -> Iterator[Stack]:
    """The local stack without a train worker until the test starts one."""
    s = make_local_stack(tmp_path, secret_key, local_base_model.parent, trainer=False)
    yield s
    s.stop()
    s.redis.stop()


def test_a_waiting_job_whose_train_message_was_deleted_still_trains(
    no_trainer: Stack, local_base_model: Path
):
    client = sdk(no_trainer, no_trainer.key())
    file_id = upload(client, chat_rows(16))
    job = create_local(client, file_id, local_base_model, n_epochs=1, batch_size=4)
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job.id).stage == "train_queued", 60, what="train_queued"
    )
    # The message waits in the broker's `train` list (nobody consumes it yet): drop it.
    wait_until(lambda: no_trainer.store.r.llen("train") == 1, 10, what="the train message")
    assert no_trainer.store.r.delete("train") == 1
    no_trainer.start_train_worker()
    done = wait_terminal(client, job.id, timeout=WATCHDOG_S + 240)
    assert done.status == "succeeded", (done.error, no_trainer.logs())
    assert done.fine_tuned_model and done.fine_tuned_model.endswith(job.id)
