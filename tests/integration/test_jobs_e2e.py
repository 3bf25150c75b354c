"""Fine-tuning jobs end to end: official SDK → API → Celery workers → sandbox provider over HTTP."""

from __future__ import annotations

import concurrent.futures
import io
import json

import httpx2
import openai
import pytest
import standardwebhooks
from openai import OpenAI

from tests.conftest import SAMPLE_DATA
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow


def sdk(stack, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=0, timeout=30)


def upload_processed(client: OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    f = client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune")
    done = wait_until(
        lambda: (x := client.files.retrieve(f.id)).status != "uploaded" and x, 30, what="file processed"
    )
    assert done.status == "processed", done.status_details
    return f.id


def sandbox_stats(stack) -> dict:
    r = httpx2.get(
        stack.base_url + "/sandbox/v1/_stats", headers={"Authorization": "Bearer sandbox-key"}, timeout=10
    )
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def qa_bytes() -> bytes:
    return (SAMPLE_DATA / "funds_qa.jsonl").read_bytes()


def test_job_runs_to_success_with_events_checkpoints_metrics_and_webhook(stack, hooks, qa_bytes):
    token = stack.key()
    client = sdk(stack, token)
    training = upload_processed(client, qa_bytes)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=training,
        suffix="funds",
        seed=7,
        metadata={"team": "research"},
        extra_body={
            "provider": "sandbox",
            "webhook": {"url": hooks.url},
            "prepare": {"split": {"validation": 0.1, "seed": 3}},
        },
    )
    assert job.status == "validating_files" and job.id.startswith("ftjob-")
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
    tenant = final.organization_id
    assert final.fine_tuned_model == f"ft:gpt-4o-mini-2024-07-18:{tenant}:funds:{job.id}"
    assert final.trained_tokens and final.result_files

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    messages = [e.message for e in events]
    assert any("successfully completed" in m for m in messages)
    assert events[0].created_at >= events[-1].created_at  # newest first
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and all(c.fine_tuning_job_id == job.id for c in checkpoints)

    metrics = httpx2.get(
        f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}/metrics", headers={"Authorization": f"Bearer {token}"}
    ).json()["data"]
    assert len(metrics) >= 3 and metrics[0]["train_loss"] > metrics[-1]["train_loss"]
    csv_text = httpx2.get(
        f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}/metrics?format=csv",
        headers={"Authorization": f"Bearer {token}"},
    ).text
    assert csv_text.splitlines()[0] == (
        "step,train_loss,train_mean_token_accuracy,valid_loss,"
        "valid_mean_token_accuracy,full_valid_loss,full_valid_mean_token_accuracy"
    )
    assert client.files.content(final.result_files[0]).text.startswith("step,")

    listed = client.fine_tuning.jobs.list(metadata={"team": "research"}).data
    assert [j.id for j in listed] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "other"}).data == []

    # The webhook: exactly the terminal event, verified by both official verifiers.
    wait_until(lambda: hooks.received, 30, what="webhook")
    secret = httpx2.get(
        f"{stack.base_url}/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {token}"}
    ).json()["secret"]
    headers, body = hooks.received[0]
    event = client.webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "fine_tuning.job.succeeded"
    payload = standardwebhooks.Webhook(secret).verify(body, headers)
    assert payload["data"]["id"] == job.id and payload["data"]["status"] == "succeeded"
    deliveries = httpx2.get(
        f"{stack.base_url}/v1/fine_tuning/jobs/{job.id}/webhook_deliveries",
        headers={"Authorization": f"Bearer {token}"},
    ).json()["data"]
    assert deliveries[0]["status"] == "delivered" and deliveries[0]["attempts"][0]["status_code"] == 200

    assert sandbox_stats(stack)["creates_by_tuneline_job"][job.id] == 1


def test_cancel_before_the_provider_job_exists_and_after(stack, qa_bytes):
    client = sdk(stack, stack.key())
    training = upload_processed(client, qa_bytes)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"provider": "sandbox"}
    )
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.cancel(job.id)
    assert err.value.code == "job_not_cancellable"
    # Mid-training: wait until the provider is running it, then cancel.
    job2 = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"provider": "sandbox"}
    )
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job2.id).provider_job_id,
        60,  # type: ignore[attr-defined]
        interval=0.2,
        what="provider job",
    )
    assert client.fine_tuning.jobs.cancel(job2.id).status == "cancelled"
    wait_until(
        lambda: any(
            "Cancelled provider job" in e.message for e in client.fine_tuning.jobs.list_events(job2.id).data
        ),
        30,
        what="provider cancel",
    )
    assert client.fine_tuning.jobs.retrieve(job2.id).status == "cancelled"


def test_bad_job_requests_are_clear_4xx(stack, qa_bytes):
    token = stack.key()
    client = sdk(stack, token)
    training = upload_processed(client, qa_bytes)
    other = sdk(stack, stack.key())
    cases = [
        ({"model": "gpt-9-ultra", "training_file": training}, openai.BadRequestError, "model"),
        (
            {"model": "gpt-4o-mini-2024-07-18", "training_file": training, "validation_file": training},
            openai.BadRequestError,
            "validation_file",
        ),
        (
            {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-doesnotexist"},
            openai.BadRequestError,
            "training_file",
        ),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": training,
                "hyperparameters": {"n_epochs": 1000},
            },
            openai.BadRequestError,
            "hyperparameters.n_epochs",
        ),
        (
            {
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": training,
                "hyperparameters": {"n_epochs": "3"},
            },
            openai.BadRequestError,
            "hyperparameters.n_epochs",
        ),
    ]
    for body, error, param in cases:
        with pytest.raises(error) as err:
            client.fine_tuning.jobs.create(**body)
        assert err.value.body["param"] == param, (body, err.value.body)  # type: ignore[index]
    # Another tenant's file is indistinguishable from a missing one.
    with pytest.raises(openai.BadRequestError) as err:
        other.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training)
    assert err.value.code == "file_not_found"
    # Budget gate: refused before anything is uploaded.
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.fine_tuning.jobs.create(
            model="gpt-4o-2024-08-06", training_file=training, extra_body={"max_cost_usd": 0.01}
        )
    assert err.value.code == "budget_exceeded"
    # A file that failed preparation.
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(b"not json\n" * 20)), purpose="fine-tune")
    wait_until(lambda: client.files.retrieve(bad.id).status == "error", 30, what="bad file")
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=bad.id)
    assert err.value.code == "invalid_training_file"
    # Unsafe webhook URL (loopback is allowed in tests; the metadata address never is).
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=training,
            extra_body={"webhook": {"url": "http://169.254.169.254/latest"}},
        )
    assert err.value.body["param"] == "webhook.url"  # type: ignore[index]
    assert client.fine_tuning.jobs.list().data == []  # nothing was started


def test_concurrent_posts_with_one_idempotency_key_make_one_job(stack, qa_bytes):
    token = stack.key()
    client = sdk(stack, token)
    training = upload_processed(client, qa_bytes)
    body = json.dumps({"model": "gpt-4o-mini-2024-07-18", "training_file": training, "provider": "sandbox"})

    def post(_: int) -> httpx2.Response:
        return httpx2.post(
            f"{stack.base_url}/v1/fine_tuning/jobs",
            content=body,
            timeout=30,
            headers={
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": "same-key",
                "Content-Type": "application/json",
            },
        )

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    ok = [r for r in responses if r.status_code == 200]
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in ok}) == 1 and ok
    assert len(client.fine_tuning.jobs.list().data) == 1
