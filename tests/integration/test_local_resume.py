"""kill -9 of the training worker mid-run: the lease expires, beat re-queues, training resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import make_local_stack
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


def test_killed_training_worker_resumes_from_last_checkpoint(
    tmp_path: Path, secret_key: str, local_base_model: Path
) -> None:
    stack = make_local_stack(tmp_path, secret_key, local_base_model.parent)
    try:
        token = stack.key()
        client = sdk(stack, token)
        file_id = upload(client, chat_rows(300))
        # 300 examples, batch 4, 2 epochs: 150 steps, a checkpoint every 10.
        job = create_local(client, file_id, local_base_model, n_epochs=2, batch_size=4, checkpoint_every=10)
        first_child = child_pid(stack, job.id)
        checkpoints = wait_until(
            lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data,
            180,
            interval=0.2,
            what="a checkpoint",
        )
        seen_step = max(c.step_number for c in checkpoints)

        train_worker = next(w for w in stack.workers if "worker-train" in w.log.name)
        train_worker.kill9()
        wait_until(lambda: gone(first_child), 10, interval=0.1, what="the orphaned training child to die")
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"

        stack.start_train_worker()
        done = wait_terminal(client, job.id, timeout=300)
        assert done.status == "succeeded", (done.error, stack.logs())

        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any(m.startswith("The training worker stopped answering; re-queued") for m in messages)
        resumed = [m for m in messages if m.startswith("Resumed training from the checkpoint at step ")]
        assert len(resumed) == 1, messages
        resumed_step = int(resumed[0].split("step ")[1].split(" ")[0])
        total = int(resumed[0].split(" of ")[1].split(" ")[0])  # about 150 (duplicates are dropped)
        assert seen_step <= resumed_step < total

        # One set of outputs: every step once, each checkpoint once, one result file.
        rows = get_json(stack, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]
        assert [r["step"] for r in rows] == list(range(1, total + 1))
        steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data]
        assert len(steps) == len(set(steps)) and set(range(10, total + 1, 10)) <= set(steps)
        assert len(done.result_files) == 1
        assert len(client.files.content(done.result_files[0]).text.splitlines()) == total + 1
    finally:
        stack.stop()
        stack.redis.stop()
