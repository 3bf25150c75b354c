"""Pause a local job mid-training, then resume it: it continues from the pause's checkpoint."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from service.core.backends.local import local_state
from service.core.jobs import record
from tests.integration.conftest import Stack
from tests.integration.test_local_jobs import (
    chat_rows,
    child_pid,
    create_local,
    get_json,
    gone,
    sdk,
    upload,
    wait_terminal,
)
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow

STEPS = 90


def test_pause_frees_the_device_and_resume_continues_from_the_checkpoint(
    local: Stack, local_base_model: Path
) -> None:
    token = local.key()
    client = sdk(local, token)
    file_id = upload(client, chat_rows(120))
    # 120 examples, batch 4, 3 epochs: 90 steps, so that the pause lands mid-run even when a loaded
    # machine reads the metrics late (a pause after the last step lets the run finish); the
    # periodic checkpoints are far apart.
    job = create_local(client, file_id, local_base_model, n_epochs=3, batch_size=4, checkpoint_every=1000)
    pid = child_pid(local, job.id)
    wait_until(
        lambda: len(get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]) >= 2,
        180,
        what="training under way",
    )
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"

    # The child saves a checkpoint at its next step and exits; the job then sits in stage paused.
    wait_until(lambda: gone(pid), 120, interval=0.2, what=f"training child {pid} to exit")
    try:
        settled = wait_until(
            lambda: (j := record.load(local.store, job.id)) and j.stage == "paused" and j, 30, what="paused"
        )
    except TimeoutError:
        now = record.load(local.store, job.id)
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=30).data]
        where = now and (now.status, now.stage, now.backend_state)
        raise AssertionError(f"not paused: {where}\n{events}\n{local.logs()}") from None
    step = local_state(settled).paused_step
    assert step is not None and 2 <= step < STEPS
    assert step in [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert err.value.code == "job_not_pausable" and "paused" in err.value.message

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = wait_terminal(client, job.id, timeout=300)
    assert done.status == "succeeded", (done.error, local.logs())

    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert f"Training paused at step {step}; its checkpoint is kept and the device is free" in messages
    assert any(
        m.startswith(f"Resumed training from the checkpoint at step {step} of {STEPS}") for m in messages
    ), messages
    # Every step once: the resumed run did not start over.
    rows = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert len(client.files.content(done.result_files[0]).text.splitlines()) == STEPS + 1
