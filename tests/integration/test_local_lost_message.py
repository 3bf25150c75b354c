"""Local jobs wait in Tuneline's train queue: a deleted broker message strands nothing, limits hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.backends.local_run import WAKE_EVERY_S
from service.core.store import keys
from service.core.store import train_queue as queue
from tests.integration.conftest import Stack, make_local_stack
from tests.integration.test_local_jobs import chat_rows, create_local, sdk, upload, wait_terminal
from tests.support.procs import start_worker, wait_until

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
    store = no_trainer.store
    file_id = upload(client, chat_rows(16))
    job = create_local(client, file_id, local_base_model, n_epochs=1, batch_size=4)
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job.id).stage == "train_queued", 60, what="train_queued"
    )
    assert queue.position(store, job.id) == 1
    # Nobody consumes the `train` list yet: the start's wake-up waits there, and beat has sent its
    # one wake-up of this interval (the marker is set). Drop every message: nothing is left to
    # wake a trainer but the queue Tuneline owns.
    wait_until(
        lambda: store.r.exists(keys.train_wake()) and store.r.llen(keys.broker_queue("train")) >= 1,
        10,
        what="the wake-up messages",
    )
    assert store.r.delete(keys.broker_queue("train")) == 1
    assert store.r.llen(keys.broker_queue("train")) == 0
    no_trainer.start_train_worker()
    done = wait_terminal(client, job.id, timeout=WAKE_EVERY_S + 240)
    assert done.status == "succeeded", (done.error, no_trainer.logs())
    assert done.fine_tuned_model and done.fine_tuned_model.endswith(job.id)
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert "Waiting for a training device: position 1" in messages
    assert not queue.is_queued(store, job.id) and queue.waiting_count(store) == 0


@pytest.fixture
def two_trainers(tmp_path: Path, secret_key: str, local_base_model: Path) -> Iterator[Stack]:
    """Two train workers on two devices (named cpu and auto: both this CPU), one training per tenant."""
    s = make_local_stack(tmp_path, secret_key, local_base_model.parent, TUNELINE_TRAIN_MAX_PER_TENANT="1")
    env = {**s.env, "TUNELINE_TRAIN_DEVICE": "auto"}
    s.workers.append(
        start_worker(env, tmp_path / "worker-train-auto.log", "train", "trainauto", 1, ["--disable-prefetch"])
    )
    yield s
    s.stop()
    s.redis.stop()


def event_at(client: Any, job_id: str, prefix: str) -> int:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
    return next(e.created_at for e in events if e.message.startswith(prefix))


def test_a_tenant_at_its_limit_waits_while_others_train(two_trainers: Stack, local_base_model: Path):
    stack = two_trainers
    busy = sdk(stack, stack.key("busy"))
    other = sdk(stack, stack.key("other"))
    busy_file = upload(busy, chat_rows(24))
    other_file = upload(other, chat_rows(16))
    first = create_local(busy, busy_file, local_base_model, n_epochs=2, batch_size=4)
    second = create_local(busy, busy_file, local_base_model, n_epochs=1, batch_size=4)
    third = create_local(other, other_file, local_base_model, n_epochs=1, batch_size=4)
    for client, job in ((busy, first), (busy, second), (other, third)):
        done = wait_terminal(client, job.id, timeout=400)
        assert done.status == "succeeded", (done.error, stack.logs())
    # A free device was there all along, yet the tenant's second job started only once its first
    # had finished training (the limit is 1); the other tenant's job was not held back by it.
    first_done = event_at(busy, first.id, "Training finished")
    assert event_at(busy, second.id, "Training started") >= first_done
    devices = {
        event.message.rsplit(" ", 1)[-1]
        for client, job in ((busy, first), (busy, second), (other, third))
        for event in client.fine_tuning.jobs.list_events(job.id, limit=100).data
        if event.message.startswith("Training started on ")
    }
    assert len(devices) == 2, devices  # both trainers took part
    assert queue.running_count(stack.store, "busy") == 0 and queue.waiting_count(stack.store) == 0
