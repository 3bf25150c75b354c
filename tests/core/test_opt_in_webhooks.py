"""Opt-in ``running`` and ``checkpoint`` webhooks queue with their transition or checkpoint (real Redis)."""

from __future__ import annotations

import time

from service.core.jobs import lifecycle, states
from service.core.store import jobs as repo
from service.core.webhooks import signing
from service.core.webhooks.delivery import list_deliveries, load_delivery


def insert_job(store, job_id: str, events: list[str] | None) -> None:  # type: ignore[no-untyped-def]
    webhook = {"url": "https://hooks.example.com/x", "events": events} if events is not None else None
    repo.insert(
        store,
        {
            "id": job_id,
            "tenant": "acme",
            "created_at": int(time.time()),
            "status": states.VALIDATING,
            "stage": "provider_validating",
            "provider": "sandbox",
            "webhook": webhook,
            "event_count": 0,
        },
        time.time() * 1000,
    )


def checkpoint(job_id: str, step: int) -> dict:
    return {
        "id": f"ftckpt-{step:024d}",
        "object": "fine_tuning.job.checkpoint",
        "created_at": 1,
        "fine_tuned_model_checkpoint": f"ft:m:acme::{job_id}:ckpt-step-{step}",
        "fine_tuning_job_id": job_id,
        "step_number": step,
        "metrics": {"step": step, "train_loss": 1.0 / step},
    }


def test_running_once_and_one_checkpoint_webhook_per_new_checkpoint(store):
    insert_job(
        store, "ftjob-optin", [signing.EVENT_RUNNING, signing.EVENT_CHECKPOINT, signing.EVENT_SUCCEEDED]
    )
    lifecycle.transition(store, "ftjob-optin", states.RUNNING, "training", "started")
    assert lifecycle.record_checkpoint(store, "ftjob-optin", checkpoint("ftjob-optin", 3)) is True
    assert (
        lifecycle.record_checkpoint(store, "ftjob-optin", checkpoint("ftjob-optin", 3)) is False
    )  # a re-sync
    assert lifecycle.record_checkpoint(store, "ftjob-optin", checkpoint("ftjob-optin", 6)) is True
    lifecycle.transition(store, "ftjob-optin", states.RUNNING, "finalizing", "still running")
    lifecycle.transition(store, "ftjob-optin", states.SUCCEEDED, "done", "done")

    sent = [load_delivery(store, d["id"]) for d in list_deliveries(store, "ftjob-optin")]
    assert [d["type"] for d in sent].count(signing.EVENT_RUNNING) == 1
    steps = [d["data"]["checkpoint"]["step_number"] for d in sent if d["type"] == signing.EVENT_CHECKPOINT]
    assert sorted(steps) == [3, 6]
    assert all(d["data"]["id"] == "ftjob-optin" for d in sent)
    assert [d["type"] for d in sent].count(signing.EVENT_SUCCEEDED) == 1
    events = [e["message"] for e in repo.list_events(store, "ftjob-optin", None, 100)[0]]
    assert events.count("Checkpoint created at step 3") == 1


def test_default_events_send_neither_running_nor_checkpoint(store):
    insert_job(store, "ftjob-default", [])  # empty list: the default (terminal) events
    insert_job(store, "ftjob-nohook", None)
    for job_id in ("ftjob-default", "ftjob-nohook"):
        lifecycle.transition(store, job_id, states.RUNNING, "training", "started")
        lifecycle.record_checkpoint(store, job_id, checkpoint(job_id, 1))
    assert list_deliveries(store, "ftjob-default") == [] and list_deliveries(store, "ftjob-nohook") == []
    assert len(repo.list_checkpoints(store, "ftjob-default")) == 1
