"""The `tuneline jobs` CLI, opt-in running/checkpoint webhooks and the ops view against a live stack."""

from __future__ import annotations

import csv
import io
import json

import httpx2
import pytest
import standardwebhooks
from click.testing import CliRunner

from service.cli.main import main
from tests.api.test_ops_api import png_size
from tests.integration.test_jobs_e2e import sdk, upload_processed
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_qa() -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"第{i}个问题：什么是指数基金？"},
                {"role": "assistant", "content": f"第{i}个回答：跟踪指数的基金。"},
            ]
        }
        for i in range(30)
    ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def get(stack, token: str, path: str) -> dict:
    r = httpx2.get(stack.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def cli(stack, token: str, *args: str):  # type: ignore[no-untyped-def]
    env = {"TUNELINE_BASE_URL": stack.base_url, "TUNELINE_API_KEY": token}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_create_follow_metrics_and_checkpoint_webhooks(stack, hooks, small_qa):
    token = stack.key("cli-tenant")
    training = upload_processed(sdk(stack, token), small_qa)
    created = cli(
        stack,
        token,
        "jobs",
        "create",
        "--model",
        "gpt-4o-mini-2024-07-18",
        "--training-file",
        training,
        "--provider",
        "sandbox",
        "--suffix",
        "cli",
        "--metadata",
        "team=ops",
        "--webhook-url",
        hooks.url,
        "--webhook-event",
        "fine_tuning.job.running",
        "--webhook-event",
        "fine_tuning.job.checkpoint",
        "--webhook-event",
        "fine_tuning.job.succeeded",
        "--json",
    )
    assert created.exit_code == 0, created.output
    job = json.loads(created.stdout)
    assert job["tenant"] == "cli-tenant" and job["metadata"] == {"team": "ops"}

    followed = cli(stack, token, "jobs", "follow", job["id"])
    assert followed.exit_code == 0, (followed.output, stack.logs())
    lines = followed.stdout.splitlines()
    assert lines[-1] == f"{job['id']} succeeded"
    assert any("Checkpoint created at step" in line for line in lines)
    assert any("successfully completed" in line for line in lines)
    as_json = cli(stack, token, "jobs", "follow", job["id"], "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.exit_code == 0 and records[-1] == {"object": "follow.done", "status": "succeeded"}
    assert len({r["id"] for r in records[:-1]}) == len(records) - 1  # each event once

    got = cli(stack, token, "jobs", "get", job["id"])
    assert got.exit_code == 0 and "status:           succeeded" in got.stdout
    listed = cli(stack, token, "jobs", "list", "--metadata", "team=ops", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)["data"]] == [job["id"]]

    table = cli(stack, token, "jobs", "metrics", job["id"])
    csv_out = cli(stack, token, "jobs", "metrics", job["id"], "--csv")
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split()[:2] == ["STEP", "TRAIN_LOSS"]
    assert len(table.stdout.splitlines()) == len(rows) + 1 and rows
    assert float(rows[0]["train_loss"]) > float(rows[-1]["train_loss"])
    with CliRunner().isolated_filesystem():
        env = {"TUNELINE_BASE_URL": stack.base_url, "TUNELINE_API_KEY": token}
        saved = CliRunner().invoke(main, ["jobs", "metrics", job["id"], "--png", "curve.png"], env=env)
        assert saved.exit_code == 0, saved.output
        with open("curve.png", "rb") as fh:
            assert png_size(fh.read()) == (800, 600)

    # Opt-in webhooks: one `running`, one `checkpoint` per checkpoint recorded, then `succeeded`.
    checkpoints = sdk(stack, token).fine_tuning.jobs.checkpoints.list(job["id"]).data
    assert checkpoints
    # Match the event type, not the body: every payload carries the job, whose `webhook.events`
    # lists "fine_tuning.job.succeeded" too.
    wait_until(
        lambda: any(json.loads(body)["type"] == "fine_tuning.job.succeeded" for _, body in hooks.received),
        30,
        what="the succeeded webhook",
    )
    secret = get(stack, token, "/v1/webhooks/default/secret")["secret"]
    events = [standardwebhooks.Webhook(secret).verify(body, headers) for headers, body in hooks.received]
    types = [e["type"] for e in events]
    assert types.count("fine_tuning.job.running") == 1 and types.count("fine_tuning.job.succeeded") == 1
    sent = sorted(e["data"]["checkpoint"]["step_number"] for e in events if e["type"].endswith("checkpoint"))
    assert sent == sorted(c.step_number for c in checkpoints)
    assert all(e["data"]["id"] == job["id"] for e in events)


def test_cli_cancel_follow_exit_code_and_errors(stack, small_qa):
    token = stack.key()
    training = upload_processed(sdk(stack, token), small_qa)
    job = sdk(stack, token).fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"provider": "sandbox"}
    )
    cancelled = cli(stack, token, "jobs", "cancel", job.id, "--json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    followed = cli(stack, token, "jobs", "follow", job.id)
    assert followed.exit_code == 1 and followed.stdout.splitlines()[-1] == f"{job.id} cancelled"
    again = cli(stack, token, "jobs", "cancel", job.id)
    assert again.exit_code == 1 and "HTTP 409" in again.output
    other = cli(stack, stack.key(), "jobs", "get", job.id)
    assert other.exit_code == 1 and "HTTP 404" in other.output
    missing_key = CliRunner().invoke(main, ["jobs", "list"], env={"TUNELINE_API_KEY": ""})
    assert missing_key.exit_code == 2 and "TUNELINE_API_KEY" in missing_key.output


def test_ops_key_sees_every_tenant_in_list_and_stats(stack, small_qa):
    member = stack.key("ops-e2e-a")
    ops = stack.key("ops-e2e-ops", role="ops")
    training = upload_processed(sdk(stack, member), small_qa)
    job = sdk(stack, member).fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"provider": "sandbox"}
    )
    listed = cli(stack, ops, "jobs", "list", "--tenant", "ops-e2e-a", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)["data"]] == [job.id]
    refused = cli(stack, member, "jobs", "list", "--tenant", "someone-else")
    assert refused.exit_code == 1 and "HTTP 403" in refused.output
    wait_until(
        lambda: sdk(stack, member).fine_tuning.jobs.retrieve(job.id).status == "succeeded", 60, what="job"
    )
    stats = get(stack, ops, "/v1/stats?tenant=ops-e2e-a")
    assert stats["jobs"]["by_status"]["succeeded"] == 1 and stats["oldest_active"] == {}
    assert set(stats["queues"]) >= {"datasets", "provider", "poll", "webhooks"}
