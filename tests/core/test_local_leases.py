"""Training leases against real Redis: one holder, expiry found by the reaper, bounded restarts."""

from __future__ import annotations

import time

from service.core import ids
from service.core.backends import local_run
from service.core.backends.local import local_state
from service.core.jobs import lifecycle, record, states
from service.core.store import Store
from service.core.store import jobs as repo
from service.core.store import training as leases
from service.settings import Settings


def training_job(store: Store) -> str:
    job_id = ids.new_id("job")
    now = time.time()
    repo.insert(
        store,
        {
            "id": job_id,
            "tenant": "t1",
            "provider": "local",
            "model": "smollm2-135m",
            "status": states.VALIDATING,
            "stage": "preparing",
            "event_count": 0,
            "webhook": None,
            "created_at": int(now),
        },
        now * 1000,
    )
    lifecycle.transition(store, job_id, states.QUEUED, "train_queued", "queued")
    lifecycle.transition(store, job_id, states.RUNNING, "training", "training")
    return job_id


def expire(store: Store, job_id: str) -> None:
    """A worker that took the lease and died: its key lapses after the TTL."""
    assert leases.acquire_lease(store, job_id, "dead-worker", 0.05, time.time())
    time.sleep(0.1)


def test_a_lease_has_one_holder_and_only_its_holder_refreshes(store: Store) -> None:
    job_id = training_job(store)
    assert leases.acquire_lease(store, job_id, "a", 30, time.time())
    assert not leases.acquire_lease(store, job_id, "b", 30, time.time())
    assert leases.refresh_lease(store, job_id, "a", 30, time.time())
    assert not leases.refresh_lease(store, job_id, "b", 30, time.time())
    assert leases.reap_expired_leases(store, time.time() + 3600) == []  # key alive: never reaped
    leases.release_lease(store, job_id, "a")
    assert leases.lease_holder(store, job_id) is None


def test_reaper_requeues_then_fails_a_job_that_keeps_dying(store: Store, settings: Settings) -> None:
    settings = settings.with_overrides(train_max_restarts=2)
    job_id = training_job(store)
    for restart in (1, 2):
        expire(store, job_id)
        assert not leases.refresh_lease(store, job_id, "dead-worker", 30, time.time())
        assert local_run.reap_leases(settings, store) == [job_id]
        assert local_run.reap_leases(settings, store) == []  # reaped once
        job = repo.load(store, job_id)
        assert job is not None and job["status"] == states.RUNNING
        last = repo.list_events(store, job_id, None, 1)[0][0]
        assert last["message"].startswith(
            f"The training worker stopped answering; re-queued to resume (restart {restart}"
        )
    expire(store, job_id)
    assert local_run.reap_leases(settings, store) == []
    job = repo.load(store, job_id)
    assert job is not None and job["status"] == states.FAILED
    assert job["error"]["code"] == "training_interrupted"
    assert "interrupted 3 times" in job["error"]["message"]


def test_a_job_whose_worker_died_while_pausing_is_paused_at_its_last_checkpoint(
    store: Store, settings: Settings
) -> None:
    job_id = training_job(store)
    repo.put_checkpoint(store, job_id, {"id": "ftckpt-a", "step_number": 4})
    lifecycle.transition(store, job_id, *states.PAUSING_STATE, "paused by the user")
    expire(store, job_id)
    assert local_run.reap_leases(settings, store) == []  # not re-queued: it waits for a resume
    job = repo.load(store, job_id)
    assert job is not None and (job["status"], job["stage"]) == states.PAUSED_STATE
    paused = record.load(store, job_id)
    assert paused is not None and local_state(paused).paused_step == 4
