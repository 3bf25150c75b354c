"""Local provider end to end: real training children under a real train worker, through the API."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

import httpx2
import psutil
import pytest
from openai import OpenAI

from service.core.backends.base import CompletionRequest
from service.core.backends.local import local_state
from service.core.inference import request_completion
from service.core.jobs import record
from service.settings import Settings
from service.taskqueue import CeleryDispatcher, make_celery
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Stack
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow


def sdk(stack: Stack, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=0, timeout=30)


def chat_rows(n: int) -> bytes:
    lines = (SAMPLE_DATA / "funds_chat.jsonl").read_bytes().splitlines()[:n]
    return b"\n".join(lines) + b"\n"


def upload(client: OpenAI, data: bytes) -> str:
    f = client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
    done = wait_until(lambda: (x := client.files.retrieve(f.id)).status != "uploaded" and x, 30, what="file")
    assert done.status == "processed", done.status_details
    return f.id


def create_local(client: OpenAI, file_id: str, model: str | Path, **hyper: Any) -> Any:
    return client.fine_tuning.jobs.create(
        model=str(model),
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},  # type: ignore[typeddict-item]
        extra_body={"provider": "local"},
    )


def wait_terminal(client: OpenAI, job_id: str, timeout: float = 240) -> Any:
    return wait_until(
        lambda: (
            (j := client.fine_tuning.jobs.retrieve(job_id)).status in ("succeeded", "failed", "cancelled")
            and j
        ),
        timeout,
        interval=0.5,
        what=f"job {job_id} to end",
    )


def get_json(stack: Stack, token: str, path: str) -> Any:
    r = httpx2.get(stack.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r.raise_for_status()
    return r.json() if "json" in r.headers.get("content-type", "") else r.text


def stream_events(stack: Stack, token: str, job_id: str) -> list[dict[str, Any]]:
    """Follow the SSE stream until the server says ``done``."""
    events: list[dict[str, Any]] = []
    url = f"{stack.base_url}/v1/fine_tuning/jobs/{job_id}/events?stream=true"
    with httpx2.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=240) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind != "done":
                events.append(json.loads(line[6:]))
            elif line.startswith("data: "):
                return events
    return events


def child_pid(stack: Stack, job_id: str) -> int:
    job = wait_until(
        lambda: (j := record.load(stack.store, job_id)) and local_state(j).child and j, 60, what="child"
    )
    return int(local_state(job).child["pid"])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_local_job_trains_streams_and_serves(local: Stack, local_base_model: Path) -> None:
    token = local.key()
    client = sdk(local, token)
    file_id = upload(client, chat_rows(40))
    job = create_local(
        client, file_id, local_base_model, n_epochs=2, batch_size=4, checkpoint_every=5, learning_rate=0.005
    )
    assert job.status == "validating_files"
    assert job.model_extra and job.model_extra["estimate"]["cost_usd"] == 0

    events = stream_events(local, token, job.id)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", (done.error, local.logs())
    assert done.fine_tuned_model == f"ft:{local_base_model}:{done.organization_id}::{job.id}"
    assert "local_model_dir" not in done.model_dump() and "local_model_dir" not in (done.model_extra or {})

    messages = [e["message"] for e in events]
    assert any(m.startswith("Prepared 40 training examples") for m in messages)
    assert any(m.startswith("Training started") for m in messages)
    assert any(m.startswith("Step 1/20: training loss=") for m in messages)
    assert any(m.startswith("Step 20/20: training loss=") for m in messages)
    assert any(m == "Checkpoint created at step 5" for m in messages)
    assert messages[-1].startswith("The job has successfully completed")
    assert not any("Uploaded" in m or "Created local job" in m for m in messages)

    rows = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]
    assert [r["step"] for r in rows] == list(range(1, 21))
    losses = [r["train_loss"] for r in rows]
    assert statistics.mean(losses[-3:]) < statistics.mean(losses[:3]), losses
    csv_text = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics?format=csv")
    assert csv_text.splitlines()[0].startswith("step,train_loss,train_mean_token_accuracy,valid_loss")

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(c.step_number for c in checkpoints) == [5, 10, 15, 20]
    assert all(c.id.startswith("ftckpt-") for c in checkpoints)

    assert len(done.result_files) == 1
    result = client.files.content(done.result_files[0]).text.splitlines()
    assert result[0].startswith("step,train_loss") and len(result) == 21

    # Inference through the core entry point the completions routes use, against the infer worker.
    settings = Settings.from_env(local.env)
    dispatcher = CeleryDispatcher(make_celery(settings))
    trained = record.load(local.store, job.id)
    assert trained is not None and Path(local_state(trained).model_dir or "").is_dir()
    answer = request_completion(
        local.store,
        dispatcher,
        trained,
        local_state(trained).model_dir,
        CompletionRequest(
            model=done.fine_tuned_model,
            messages=[{"role": "user", "content": "消费现在还能买吗"}],
            prompt=None,
            max_tokens=8,
        ),
        timeout_s=120,
    )
    dispatcher.app.close()
    assert isinstance(answer.text, str) and answer.finish_reason in ("stop", "length")
    assert 1 <= answer.completion_tokens <= 8 and answer.prompt_tokens > 0


def test_cancel_stops_the_training_child(local: Stack, local_base_model: Path) -> None:
    token = local.key()
    client = sdk(local, token)
    file_id = upload(client, chat_rows(300))
    job = create_local(client, file_id, local_base_model, n_epochs=5, batch_size=4, checkpoint_every=1000)
    pid = child_pid(local, job.id)
    wait_until(
        lambda: len(get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]) >= 3,
        120,
        what="training under way",
    )
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    wait_until(lambda: gone(pid), 15, interval=0.2, what=f"training child {pid} to stop")
    steps = len(get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"])
    assert steps < 375
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_bad_inputs_fail_clearly_and_the_worker_keeps_serving(local: Stack, local_base_model: Path) -> None:
    token = local.key()
    client = sdk(local, token)
    train_worker = next(w for w in local.workers if "worker-train" in w.log.name)
    file_id = upload(client, chat_rows(12))

    absent = local_base_model.parent / "no-such-model"  # inside the allowed root, but not there
    missing = create_local(client, file_id, absent, n_epochs=1)
    failed = wait_terminal(client, missing.id)
    assert failed.status == "failed"
    assert failed.error.code == "model_not_found", failed.error
    assert str(absent) in failed.error.message

    too_long = create_local(client, file_id, local_base_model, n_epochs=1, max_seq_length=16)
    failed = wait_terminal(client, too_long.id)
    assert failed.status == "failed"
    assert failed.error.code == "example_too_long", failed.error
    assert "line" in failed.error.message

    assert train_worker.proc is not None and train_worker.proc.poll() is None
    ok = create_local(client, file_id, local_base_model, n_epochs=1, batch_size=4)
    assert wait_terminal(client, ok.id).status == "succeeded"


def test_a_local_job_reports_to_mlflow_and_wandb(local: Stack, local_base_model: Path, monkeypatch) -> None:
    """The job's integrations: an MLflow run in the default store under the data directory and a
    W&B offline run under the job's output (no W&B key configured), each named after the job,
    holding its per-step training loss and its hyperparameters."""
    import mlflow

    from tests.support.trackers import wandb_offline_run

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    token = local.key()
    client = sdk(local, token)
    file_id = upload(client, chat_rows(16))
    integrations = [
        {"type": "wandb", "wandb": {"project": "funds", "tags": ["qa"]}},
        {"type": "mlflow", "mlflow": {"experiment_name": "funds-qa"}},
    ]
    job = client.fine_tuning.jobs.create(
        model=str(local_base_model),
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},  # type: ignore[typeddict-item]
        extra_body={"provider": "local", "integrations": integrations},
    )
    assert job.integrations is not None and [i.type for i in job.integrations] == ["wandb", "mlflow"]
    done = wait_terminal(client, job.id)
    assert done.status == "succeeded", (done.error, local.logs())
    rows = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]
    losses = {r["step"]: r["train_loss"] for r in rows}
    assert sorted(losses) == [1, 2, 3, 4]

    data = local.workdir / "data"
    tracking = mlflow.MlflowClient(f"sqlite:///{(data / 'mlflow' / 'mlflow.db').resolve()}")
    experiment = tracking.get_experiment_by_name("funds-qa")
    assert experiment is not None
    (run,) = tracking.search_runs([experiment.experiment_id], f"tags.`tuneline.job_id` = '{job.id}'")
    assert run.info.run_name == job.id and run.info.status == "FINISHED"
    assert run.data.tags["tuneline.tenant"] == done.organization_id
    history = tracking.get_metric_history(run.info.run_id, "loss")  # transformers' name of train_loss
    assert {m.step: m.value for m in history} == pytest.approx(losses, abs=1e-6)
    params = run.data.params
    assert params["tuneline.seed"] == params["seed"] == str(done.seed)
    assert (params["tuneline.n_epochs"], params["tuneline.batch_size"], params["tuneline.method"]) == (
        "1",
        "4",
        "supervised",
    )
    assert float(params["tuneline.learning_rate"]) == float(params["learning_rate"]) > 0

    (run_dir,) = (data / "jobs" / job.id / "output" / "wandb").glob(f"offline-run-*-{job.id}")
    offline = wandb_offline_run(run_dir)
    assert (offline.run_id, offline.name, offline.project) == (job.id, job.id, "funds")
    assert {"qa", f"tuneline/{job.id}"} <= set(offline.tags)
    assert offline.config["tuneline"]["seed"] == done.seed and offline.config["tuneline"]["job_id"] == job.id
    steps = {h["train/global_step"]: h["train/loss"] for h in offline.history if "train/loss" in h}
    assert steps == pytest.approx(losses, abs=1e-6)
