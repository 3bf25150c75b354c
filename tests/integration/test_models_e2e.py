"""Use and evaluate fine-tuned models end to end: SDK completions, held-out evaluation, experiments.

Official SDK → API (gunicorn) → Celery workers → sandbox provider over HTTP, on the shared stack.
"""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
import standardwebhooks
from click.testing import CliRunner

from service.cli.main import main as cli
from tests.conftest import SAMPLE_DATA
from tests.integration.test_jobs_e2e import sdk, upload_processed
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow
MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def qa_rows() -> list[dict]:
    lines = (SAMPLE_DATA / "funds_qa.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:200]]


def qa_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def get(stack, token: str, path: str) -> dict:
    r = httpx2.get(stack.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def run_cli(stack, token: str, *args: str) -> str:
    result = CliRunner().invoke(
        cli, list(args), env={"TUNELINE_BASE_URL": stack.base_url, "TUNELINE_API_KEY": token}
    )
    assert result.exit_code == 0, result.output
    return result.output


def finished(client, job_id: str):
    return wait_until(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job_id)).status in ("succeeded", "failed", "cancelled")
            and j
        ),
        120,
        interval=0.3,
        what="job to finish",
    )


def test_held_out_evaluation_webhook_and_sdk_completions(stack, hooks, qa_rows):
    token = stack.key()
    client = sdk(stack, token)
    training = upload_processed(client, qa_bytes(qa_rows))
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        suffix="qa",
        extra_body={
            "provider": "sandbox",
            "sandbox": {"steps": 3},
            "prepare": {"split": {"test": 0.1, "seed": 11}},
            "webhook": {
                "url": hooks.url,
                "events": ["fine_tuning.job.succeeded", "fine_tuning.job.evaluated"],
            },
        },
    )
    final = finished(client, job.id)
    assert final.status == "succeeded", (final.error, stack.logs())
    stages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("evaluating it on the held-out test set" in m for m in stages)

    evaluation = get(stack, token, f"/v1/fine_tuning/jobs/{job.id}/evaluation?limit=100")
    assert evaluation["status"] == "completed" and evaluation["model"] == final.fine_tuned_model
    rows = evaluation["data"]
    assert 5 <= len(rows) == evaluation["examples"] == evaluation["metrics"]["answered"] < 40
    # The split is by prompt: rows sharing a prompt (the data has some) fall on one side together.
    pairs = {(r["prompt"], r["completion"]) for r in qa_rows}
    assert all((row["prompt"], row["reference"]) in pairs for row in rows)
    # The sandbox recalls exactly what it was trained on; no test prompt was, so none is recalled.
    assert all(row["answer"].startswith("[sandbox]") for row in rows)
    assert evaluation["metrics"]["exact_match"] == 0.0

    wait_until(lambda: len(hooks.received) >= 2, 30, what="two webhooks")
    secret = get(stack, token, "/v1/webhooks/default/secret")["secret"]
    payloads = [standardwebhooks.Webhook(secret).verify(body, headers) for headers, body in hooks.received]
    assert sorted(p["type"] for p in payloads) == ["fine_tuning.job.evaluated", "fine_tuning.job.succeeded"]
    evaluated = next(p for p in payloads if p["type"] == "fine_tuning.job.evaluated")
    assert evaluated["data"]["evaluation"]["metrics"] == evaluation["metrics"]

    # The official SDK against Tuneline: a training prompt comes back with its trained answer.
    tested = {row["prompt"] for row in rows}
    counts = {p: sum(r["prompt"] == p for r in qa_rows) for p in {r["prompt"] for r in qa_rows}}
    seen = next(r for r in qa_rows if r["prompt"] not in tested and counts[r["prompt"]] == 1)
    model = final.fine_tuned_model
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": seen["prompt"]}]
    )
    assert answer.choices[0].message.content == seen["completion"]
    assert answer.model == model and answer.usage.total_tokens > 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": seen["prompt"]}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == seen["completion"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = client.completions.create(model=model, prompt="从没见过的问题", max_tokens=5)
    assert text.choices[0].text.startswith("[sandbox]") and text.choices[0].finish_reason == "length"

    # The CLI: one-shot chat, the evaluation as a table and as JSON.
    assert run_cli(stack, token, "chat", model, "-m", seen["prompt"]).strip() == seen["completion"]
    shown = run_cli(stack, token, "eval", job.id, "--examples", "3")
    assert "char_f1" in shown and f"{evaluation['metrics']['char_f1']}" in shown
    assert json.loads(run_cli(stack, token, "eval", job.id, "--json"))["metrics"] == evaluation["metrics"]

    assert [m.id for m in client.models.list()] == [model]
    assert client.models.retrieve(model).owned_by == final.organization_id
    other = sdk(stack, stack.key())
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert client.models.delete(model).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_experiment_compares_two_candidates_side_by_side(stack, qa_rows):
    token = stack.key()
    client = sdk(stack, token)
    training = upload_processed(client, qa_bytes(qa_rows[:120]))
    created = run_cli(
        stack,
        token,
        "experiments",
        "create",
        "--training-file",
        training,
        "--test-split",
        "0.1",
        "--candidate",
        f"sandbox:{MODEL}:n_epochs=2",
        "--candidate",
        "sandbox:gpt-4.1-mini-2025-04-14",
        "--json",
    )
    exp_id = json.loads(created)["id"]
    done = wait_until(
        lambda: (
            (e := get(stack, token, f"/v1/experiments/{exp_id}?limit=100"))["status"] == "completed" and e
        ),
        120,
        interval=0.5,
        what="experiment to finish",
    )
    rows = done["candidates"]
    assert [c["status"] for c in rows] == ["succeeded", "succeeded"], stack.logs()
    assert [c["model"] for c in rows] == [MODEL, "gpt-4.1-mini-2025-04-14"]
    assert rows[0]["hyperparameters"] == {"n_epochs": 2}
    for row in rows:
        assert row["evaluation_status"] == "completed" and row["metrics"]["answered"] > 0
        assert row["trained_tokens"] > 0 and row["duration_s"] > 0 and row["estimated_cost_usd"] > 0
        assert row["baseline"] is None  # sandbox base models cannot be served
    # Identical split: both candidates answered the same test prompts, matched side by side.
    per_job = [
        {
            x["prompt"]
            for x in get(stack, token, f"/v1/fine_tuning/jobs/{c['job_id']}/evaluation?limit=100")["data"]
        }
        for c in rows
    ]
    assert per_job[0] == per_job[1] == {e["prompt"] for e in done["examples"]}
    for example in done["examples"]:
        assert [a["job_id"] for a in example["answers"]] == [c["job_id"] for c in rows]
        assert all(a["answer"].startswith("[sandbox]") for a in example["answers"])
        assert example["reference"]
    assert done["best_candidate"] in (0, 1)

    shown = run_cli(stack, token, "experiments", "get", exp_id, "--examples", "2")
    assert all(c["job_id"] in shown for c in rows) and "reference:" in shown
    failed = CliRunner().invoke(
        cli,
        ["experiments", "create", "--training-file", training, "--candidate", f"sandbox:{MODEL}"],
        env={"TUNELINE_BASE_URL": stack.base_url, "TUNELINE_API_KEY": token},
    )
    assert failed.exit_code == 1 and "test set" in failed.output
