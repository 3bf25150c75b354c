"""Pause and resume through the official SDK: API → the sandbox provider (forwarded), webhooks."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from tests.integration.test_jobs_e2e import qa_bytes, sdk, upload_processed  # noqa: F401 (fixture)
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow
SANDBOX = {"Authorization": "Bearer sandbox-key"}


def provider_job(stack, provider_job_id: str) -> dict:
    r = httpx2.get(
        f"{stack.base_url}/sandbox/v1/fine_tuning/jobs/{provider_job_id}", headers=SANDBOX, timeout=10
    )
    r.raise_for_status()
    return r.json()


def test_pause_and_resume_a_provider_job(stack, hooks, qa_bytes):  # noqa: F811
    client = sdk(stack, stack.key())
    training = upload_processed(client, qa_bytes)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=training,
        extra_body={
            "provider": "sandbox",
            "sandbox": {"steps": 40, "step_s": 15, "queued_s": 0, "validating_s": 0},
            "webhook": {"url": hooks.url, "events": ["fine_tuning.job.paused", "fine_tuning.job.resumed"]},
        },
    )
    # Not running yet: nothing to pause; the 409 names the status.
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert err.value.code == "job_not_pausable" and "validating_files" in err.value.message

    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", 60, interval=0.1, what="running"
    )
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    provider_id = paused.model_extra["provider_job_id"]  # type: ignore[index]
    assert provider_job(stack, provider_id)["status"] == "paused"
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert err.value.code == "job_not_pausable" and "paused" in err.value.message

    # The poll keeps syncing a paused job and leaves it paused (the provider's timeline stands still).
    polled = len(client.fine_tuning.jobs.list_events(job.id, limit=100).data)
    wait_until(
        lambda: (
            provider_job(stack, provider_id)["status"] == "paused"
            and client.fine_tuning.jobs.retrieve(job.id).status == "paused"
            and len(client.fine_tuning.jobs.list_events(job.id, limit=100).data) >= polled
        ),
        10,
        what="still paused",
    )

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "running"
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.resume(job.id)
    assert err.value.code == "job_not_resumable" and "running" in err.value.message

    final = wait_until(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled")
            and j
        ),
        90,
        interval=0.3,
        what="job to finish",
    )
    assert final.status == "succeeded", (final.error, stack.logs())
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert (
        "Fine-tuning job paused by the user." in messages
        and "Fine-tuning job resumed by the user." in messages
    )
    rows = httpx2.get(
        f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}/metrics",
        headers={"Authorization": f"Bearer {client.api_key}"},
        timeout=10,
    ).json()["data"]
    assert [r["step"] for r in rows] == list(range(1, 41))  # every step once, pause or not

    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert err.value.code == "job_not_pausable" and "succeeded" in err.value.message

    wait_until(lambda: len(hooks.received) >= 2, 30, what="webhooks")
    # One of each (deliveries are concurrent, so their order is not guaranteed).
    kinds = sorted(json.loads(body)["type"] for _, body in hooks.received)
    assert kinds == ["fine_tuning.job.paused", "fine_tuning.job.resumed"]
