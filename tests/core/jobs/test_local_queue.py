"""Local jobs in the train wait queue against real Redis: start, claim order, cancel, reaper, beat."""

from __future__ import annotations

import dataclasses
import time

import pytest

from service.core import tasknames
from service.core.auth import Principal
from service.core.backends import local_run, registry
from service.core.backends.base import Backend
from service.core.clock import ManualClock
from service.core.dispatch import RecordingDispatcher
from service.core.jobs import record, states
from service.core.jobs.stages import poll, submit
from service.core.jobs.stages.common import WATCHDOG_S
from service.core.jobs.usecases import JobsContext, cancel_job
from service.core.store import jobs as repo
from service.core.store import keys
from service.core.store import train_queue as queue
from service.core.store import training as leases
from service.core.store.base import Store
from service.settings import Settings
from tests.core.jobs.fakes import new_job, run_task, stage_context

WAITING = "Waiting for a training device: position "


@pytest.fixture
def backends(settings: Settings, store: Store) -> dict[str, Backend]:
    return {"local": registry.Backends(settings, store)("local")}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


def queued_job(settings, store, backends, clock, tenant: str = "acme", **params) -> str:
    """A local job created and prepared: it now waits in train_queued."""
    job_id = new_job(settings, store, backends, "local", tenant=tenant, model="smollm2-135m", **params)
    assert run_task(stage_context(settings, store, backends, clock), tasknames.JOB_PREPARE, job_id)
    return job_id


def messages(store: Store, job_id: str) -> list[str]:
    return [e["message"] for e in repo.events_since(store, job_id, 0)]


def test_start_queues_the_job_and_wakes_a_trainer_once(settings, store, backends, clock):
    ctx = stage_context(settings, store, backends, clock)
    first = new_job(settings, store, backends, "local", model="smollm2-135m")
    second = new_job(settings, store, backends, "local", model="smollm2-135m")
    # The task prepare hands on is the wake-up; the queue, not the message, holds the job.
    assert run_task(ctx, tasknames.JOB_PREPARE, first) == tasknames.TRAIN_RUN
    assert run_task(ctx, tasknames.JOB_PREPARE, second) == tasknames.TRAIN_RUN
    job = record.load(store, second)
    assert job is not None and job.stage == "train_queued" and job.status == states.QUEUED
    assert queue.is_queued(store, second) and queue.waiting_count(store) == 2
    assert [m for m in messages(store, first) if m.startswith(WAITING)] == [WAITING + "1"]
    assert [m for m in messages(store, second) if m.startswith(WAITING)] == [WAITING + "2"]
    # Starting again (a duplicate delivery, the watchdog's look) neither queues nor wakes twice.
    assert backends["local"].start(job) is None
    clock.advance(WATCHDOG_S + 1)
    assert poll.run_poll(ctx, second) is None and repo.poll_due_at(store, second) is None
    assert queue.waiting_count(store) == 2
    assert [m for m in messages(store, second) if m.startswith(WAITING)] == [WAITING + "2"]


def test_jobs_are_claimed_by_priority_then_tenant_turns(settings, store, backends, clock):
    a0 = queued_job(settings, store, backends, clock, tenant="a")
    a1 = queued_job(settings, store, backends, clock, tenant="a")
    b0 = queued_job(settings, store, backends, clock, tenant="b")
    urgent = queued_job(settings, store, backends, clock, tenant="b", priority=5)
    job = record.load(store, urgent)
    assert job is not None and job.priority == 5
    assert queue.position(store, urgent) == 1
    assert [queue.claim(store) for _ in range(5)] == [urgent, a0, b0, a1, None]


def test_a_trainer_drains_the_queue_and_gives_every_slot_back(settings, store, backends, clock):
    """Jobs cancelled while waiting are claimed and left; the slots and the device come back."""
    jobs = [queued_job(settings, store, backends, clock) for _ in range(3)]
    for job_id in jobs:  # cancelled behind the queue's back (no cancel task ran)
        record.modify(store, job_id, lambda j: setattr(j, "status", states.CANCELLED))
    concluded: list[str] = []
    runner = local_run.LocalRunner(dataclasses.replace(settings, train_max_per_tenant=1), store)
    # With a limit of 1, each claim waits for the previous job's slot: all three still go through.
    assert runner.serve(lambda job_id, outcome: concluded.append(job_id)) == jobs
    assert concluded == [] and queue.waiting_count(store) == 0 and queue.running_count(store, "acme") == 0
    assert not any(queue.is_queued(store, j) for j in jobs)
    assert not store.r.exists(keys.train_device(runner.ctx.device_id))


def test_a_busy_device_drops_the_wake_up_and_the_job_stays_queued(settings, store, backends, clock):
    job_id = queued_job(settings, store, backends, clock)
    runner = local_run.LocalRunner(settings, store)
    assert leases.acquire_device(store, runner.ctx.device_id, "another-run", 30)
    assert runner.serve(lambda job_id, outcome: None) == []
    assert queue.position(store, job_id) == 1


def test_cancel_while_waiting_removes_the_job_from_the_queue(settings, store, backends, clock):
    job_id = queued_job(settings, store, backends, clock)
    other = queued_job(settings, store, backends, clock)
    dispatcher = RecordingDispatcher()
    jobs_ctx = JobsContext(settings, store, dispatcher, backends=backends.__getitem__)
    cancelled = cancel_job(jobs_ctx, Principal(tenant="acme", role="member", key_id="k1"), job_id)
    assert cancelled["status"] == states.CANCELLED
    assert dispatcher.sent == [(tasknames.JOB_CANCEL, (job_id,))]
    submit.run_cancel(stage_context(settings, store, backends, clock), job_id)  # the cancel task
    assert not queue.is_queued(store, job_id)
    assert queue.waiting_count(store) == 1 and queue.position(store, other) == 1


def test_the_reaper_puts_an_interrupted_job_back_in_front_and_wakes_a_trainer(
    settings, store, backends, clock
):
    interrupted = queued_job(settings, store, backends, clock)
    waiting = queued_job(settings, store, backends, clock)
    assert queue.claim(store) == interrupted
    # Its worker took the lease and died: the lease expires without a release.
    assert leases.acquire_lease(store, interrupted, "dead-worker", 0.05, time.time() - 1)
    time.sleep(0.1)
    store.r.set(keys.train_wake(), "1")  # beat sent a wake-up a moment ago
    assert local_run.reap_leases(settings, store) == [interrupted]
    assert queue.position(store, interrupted) == 1 and queue.position(store, waiting) == 2
    assert queue.running_count(store, "acme") == 0
    assert any(m.startswith("The training worker stopped answering") for m in messages(store, interrupted))
    # Interrupted again while a wake-up was just sent: the re-queue wakes a trainer all the same.
    assert queue.claim(store) == interrupted
    assert leases.acquire_lease(store, interrupted, "dead-worker", 0.05, time.time() - 1)
    time.sleep(0.1)
    assert local_run.tend_queue(settings, store)
    assert queue.claim(store) == interrupted


def test_a_worker_that_dies_between_claim_and_training_does_not_strand_the_job(
    settings, store, backends, clock
):
    """The claim takes the lease in the same step: a claimer killed before it trains leaves a lease
    that expires, and the reaper puts the job back in front of the queue."""
    job_id = queued_job(settings, store, backends, clock)
    later = queued_job(settings, store, backends, clock)
    assert queue.claim(store, lease_token="dying-worker", lease_ttl_s=0.05, now=time.time()) == job_id
    assert leases.lease_holder(store, job_id) == "dying-worker"
    time.sleep(0.1)  # the worker was killed here: nothing releases the slot or the lease
    assert local_run.reap_leases(settings, store) == [job_id]
    assert queue.position(store, job_id) == 1 and queue.position(store, later) == 2
    assert queue.running_count(store, "acme") == 0


def test_a_claim_never_takes_over_a_live_lease(settings, store, backends, clock):
    job_id = queued_job(settings, store, backends, clock)
    assert leases.acquire_lease(store, job_id, "live-worker", 30, time.time())
    assert queue.claim(store, lease_token="newcomer", lease_ttl_s=30, now=time.time()) == job_id
    assert leases.lease_holder(store, job_id) == "live-worker"
    assert not leases.acquire_lease(store, job_id, "newcomer", 30, time.time())
    assert leases.acquire_lease(store, job_id, "live-worker", 30, time.time())  # its own: kept


def test_the_reaper_releases_a_job_that_ended_meanwhile(settings, store, backends, clock):
    job_id = queued_job(settings, store, backends, clock)
    assert queue.claim(store) == job_id
    assert leases.acquire_lease(store, job_id, "dead-worker", 0.05, time.time() - 1)
    record.modify(store, job_id, lambda j: setattr(j, "status", states.CANCELLED))
    time.sleep(0.1)
    assert local_run.reap_leases(settings, store) == []
    assert not queue.is_queued(store, job_id) and queue.running_count(store, "acme") == 0


def test_beat_wakes_a_trainer_only_while_jobs_wait_and_once_per_interval(settings, store, backends, clock):
    assert not local_run.tend_queue(settings, store)  # nothing waits
    assert not store.r.exists(keys.train_wake())
    job_id = queued_job(settings, store, backends, clock)
    assert local_run.tend_queue(settings, store)
    assert not local_run.tend_queue(settings, store)  # sent one this interval
    ttl_s = store.r.pttl(keys.train_wake()) / 1000
    assert 0 < ttl_s <= local_run.WAKE_EVERY_S
    store.r.delete(keys.train_wake())  # the interval passed
    assert local_run.tend_queue(settings, store)
    assert queue.claim(store) == job_id  # training: nothing waits any more
    store.r.delete(keys.train_wake())
    assert not local_run.tend_queue(settings, store)


def test_a_train_queued_record_from_before_the_queue_joins_it(settings, store, backends, clock):
    """Stored before the queue existed: train_queued, no priority field, no queue entry."""
    ctx = stage_context(settings, store, backends, clock)
    job_id = queued_job(settings, store, backends, clock)
    queue.release(store, job_id)
    repo.update(store, job_id, lambda raw, pipe: {k: v for k, v in raw.items() if k != "priority"})
    stored = repo.load(store, job_id)
    assert stored is not None and "priority" not in stored
    job = record.load(store, job_id)
    assert job is not None and job.priority == 0
    clock.advance(WATCHDOG_S + 1)
    assert job_id in poll.claim_due(ctx)
    assert poll.run_poll(ctx, job_id) == tasknames.TRAIN_RUN  # queued, and a trainer woken
    assert queue.position(store, job_id) == 1
    assert messages(store, job_id)[-1] == WAITING + "1"
    assert poll.run_poll(ctx, job_id) is None  # unscheduled; a stray look changes nothing
    assert messages(store, job_id).count(WAITING + "1") == 2  # at prepare, and on joining
