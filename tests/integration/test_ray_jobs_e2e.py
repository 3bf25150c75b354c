"""Local jobs with ``compute.executor = "ray"`` end to end: the API, real Celery workers and a real
local Ray head (one for the module). A job on 2 Ray workers survives the death of the train worker
that follows it (one Ray submission, re-attached), pause stops its Ray job and resume submits the
next attempt, cancel stops it, and an unreachable cluster fails the job clearly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.backends.local import local_state
from service.core.jobs import record
from tests.integration.conftest import Stack, make_local_stack
from tests.integration.test_local_jobs import chat_rows, get_json, sdk, upload, wait_terminal
from tests.support.procs import Proc, free_port, start_worker, wait_until
from tests.support.ray import RAY_MISSING, RayHead, ray_installed, ray_processes
from tests.support.trackers import wandb_offline_run
from tests.support.training import training_env

pytest.importorskip("torch", reason="the local trainer needs the `train` extra (torch)")
if not ray_installed():
    pytest.skip(RAY_MISSING, allow_module_level=True)

from ray.job_submission import JobSubmissionClient  # after the skip: the extra may be missing

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 420  # Ray starts a driver and 2 workers that each import torch; the machine is shared


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    ray_head = RayHead(tmp_path_factory.mktemp("ray") / "head.log", num_cpus=2).start(training_env())
    yield ray_head
    ray_head.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str, local_base_model: Path, head: RayHead
) -> Iterator[Stack]:
    """The local stack pointed at the head; each test starts the train workers it needs."""
    s = make_local_stack(
        tmp_path_factory.mktemp("ray-jobs"),
        secret_key,
        local_base_model.parent,
        trainer=False,
        TUNELINE_RAY_ADDRESS=head.address,
    )
    yield s
    s.stop()
    s.redis.stop()


def train_worker(stack: Stack, **env: str) -> Proc:
    """A train worker (concurrency 1, as deployed), with ``env`` over the stack's settings."""
    proc = start_worker(
        {**stack.env, **env},
        stack.workdir / f"worker-train-{len(stack.workers)}.log",
        "train",
        f"train{len(stack.workers)}",
        concurrency=1,
        extra_args=["--disable-prefetch"],
    )
    stack.workers.append(proc)
    return proc


def create_on_ray(
    client: Any, file_id: str, model: Path, workers: int = 2, wandb: str | None = None, **hyper: Any
) -> Any:
    """A supervised job on ``workers`` Ray workers; ``wandb``: its W&B integration's project."""
    extra: dict[str, Any] = {"provider": "local", "compute": {"executor": "ray", "num_workers": workers}}
    if wandb:
        extra["integrations"] = [{"type": "wandb", "wandb": {"project": wandb}}]
    return client.fine_tuning.jobs.create(
        model=str(model),
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
        extra_body=extra,
    )


def submissions(head: RayHead, job_id: str) -> list[Any]:
    """The cluster's Ray jobs for a Tuneline job, oldest first."""
    found = [
        j
        for j in JobSubmissionClient(head.address).list_jobs()
        if (j.metadata or {}).get("tuneline_job_id") == job_id
    ]
    return sorted(found, key=lambda j: j.submission_id)


def ray_status(head: RayHead, submission_id: str) -> str:
    return str(JobSubmissionClient(head.address).get_job_status(submission_id).value)


def steps(stack: Stack, token: str, job_id: str) -> list[int]:
    return [r["step"] for r in get_json(stack, token, f"/v1/fine_tuning/jobs/{job_id}/metrics")["data"]]


def messages(client: Any, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data]


def relayed(stack: Stack, job_id: str) -> int:
    """How much of its Ray job's log the job's follower has recorded as relayed."""
    job = record.load(stack.store, job_id)
    return int(((local_state(job).ray or {}) if job else {}).get("offset") or 0)


def no_train_workers(head: RayHead) -> bool:
    return not ray_processes(head, "RayTrainWorker")


def test_a_ray_job_outlives_its_follower_and_succeeds(
    stack: Stack, head: RayHead, local_base_model: Path
) -> None:
    token = stack.key()
    client = sdk(stack, token)
    file_id = upload(client, chat_rows(160))
    # 160 examples, 2 workers x batch 4: 20 steps of 8 per epoch, 8 epochs. Long enough (about 10 s
    # of training on an idle machine) that the kill below lands mid-training: the first metrics are
    # relayed at most a poll (2 s) after training starts.
    follower = train_worker(stack)
    job = create_on_ray(
        client, file_id, local_base_model, wandb="funds", n_epochs=8, batch_size=4, checkpoint_every=40
    )
    assert job.model_extra is not None
    assert job.model_extra["compute"] == {"executor": "ray", "num_workers": 2, "gpus_per_worker": 0.0}
    sid = f"tuneline-{job.id}-0"
    wait_until(lambda: steps(stack, token, job.id), RUN_TIMEOUT_S, interval=0.5, what="training on Ray")
    # ... and the follower has recorded how far it read the run's log (the next one reads on).
    wait_until(lambda: relayed(stack, job.id), 30, interval=0.2, what="the relayed offset")

    follower.kill9()  # the Celery worker that follows the run, with its pool
    assert ray_status(head, sid) == "RUNNING"  # the run does not depend on it
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    train_worker(stack)
    done = wait_terminal(client, job.id, timeout=RUN_TIMEOUT_S)
    assert done.status == "succeeded", (done.error, stack.logs())

    # One Ray job, the one the first worker submitted, followed to its end by the second.
    assert [j.submission_id for j in submissions(head, job.id)] == [sid]
    assert ray_status(head, sid) == "SUCCEEDED"
    events = messages(client, job.id)
    assert f"Submitted to the Ray cluster at {head.address}: Ray job {sid} (2 workers)" in events
    assert f"Training started on Ray job {sid}" in events
    assert any(m.startswith("The training worker stopped answering; re-queued") for m in events)
    assert f"Following Ray job {sid} from a new worker; it went on training meanwhile" in events
    assert any(m.startswith("Step 160/160: training loss=") for m in events), events

    # The loss curve, every step once, in the metrics route; the outputs where finalize reads them.
    rows = get_json(stack, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]
    assert [r["step"] for r in rows] == list(range(1, 161))
    losses = [r["train_loss"] for r in rows]
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(c.step_number for c in checkpoints) == [40, 80, 120, 160]
    trained = record.load(stack.store, job.id)
    assert trained is not None
    assert Path(local_state(trained).model_dir or "").is_dir()
    assert done.fine_tuned_model and done.fine_tuned_model.endswith(job.id)
    assert len(client.files.content(done.result_files[0]).text.splitlines()) == 161

    # Its checkpoints are models as a process job's are: rank 0 copied each one into the job's
    # checkpoints, which keep the newest 3 (and none of the state only Ray Train's copy resumes from).
    kept = Path(stack.env["TUNELINE_DATA_DIR"]) / "jobs" / job.id / "output" / "checkpoints"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint-120", "checkpoint-160", "checkpoint-80"]
    assert not list(kept.glob("*/optimizer.pt"))
    name = next(c.fine_tuned_model_checkpoint for c in checkpoints if c.step_number == 80)
    assert name == f"{done.fine_tuned_model}:ckpt-step-80"
    answer = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
    )
    assert answer.model == name and answer.choices[0].message.content is not None

    # The W&B integration reached the run: with no key configured, rank 0 wrote an offline run
    # under the job's output, as the process executor's child does, with every step's loss.
    (run_dir,) = (kept.parent / "wandb").glob(f"offline-run-*-{job.id}")
    offline = wandb_offline_run(run_dir)
    assert (offline.run_id, offline.project) == (job.id, "funds")
    logged = {h["train/global_step"] for h in offline.history if "train/loss" in h}
    assert logged == set(range(1, 161))


def registered_step(stack: Stack, job_id: str) -> int | None:
    """The step of the newest checkpoint Ray Train has registered for the job's run (its
    controller's snapshot in the default storage, ``<data dir>/ray``): where a next attempt starts."""
    snapshot = stack.workdir / "data" / "ray" / f"tuneline-{job_id}" / "checkpoint_manager_snapshot.json"
    latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    return None if not latest else int(latest["metrics"]["step"])


def test_pause_resume_and_cancel_stop_the_ray_job(
    stack: Stack, head: RayHead, local_base_model: Path
) -> None:
    token = stack.key()
    client = sdk(stack, token)
    file_id = upload(client, chat_rows(240))
    train_worker(stack)
    # 240 examples, 2 workers x batch 4: 30 steps per epoch, 6 epochs; a checkpoint every 5 steps.
    job = create_on_ray(client, file_id, local_base_model, n_epochs=6, batch_size=4, checkpoint_every=5)
    first = f"tuneline-{job.id}-0"
    registered = wait_until(
        lambda: registered_step(stack, job.id), RUN_TIMEOUT_S, interval=0.5, what="a registered checkpoint"
    )
    # The follower reads the run every 2 s: the job says running once it has read that it started.
    wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running", 30, what="running")
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    paused = wait_until(
        lambda: (j := record.load(stack.store, job.id)) and j.stage == "paused" and j,
        90,
        interval=0.5,
        what="paused",
    )
    assert ray_status(head, first) == "STOPPED"
    wait_until(lambda: no_train_workers(head), 30, interval=0.5, what="the Ray workers to exit")
    reported = local_state(paused).paused_step  # the newest checkpoint the run reported
    assert reported is not None and reported >= registered

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    second = f"tuneline-{job.id}-1"
    resumed = wait_until(
        lambda: next(
            (
                m
                for m in messages(client, job.id)
                if m.startswith("Resumed training from the checkpoint at step")
            ),
            None,
        ),
        RUN_TIMEOUT_S,
        interval=0.5,
        what="the next attempt to resume",
    )
    # From the newest checkpoint Ray Train registered before the stop: at least the one seen above,
    # at most the newest the run reported.
    assert registered <= int(resumed.split("step ")[1].split(" ")[0]) <= reported
    assert ray_processes(head, "RayTrainWorker")

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    wait_until(lambda: no_train_workers(head), 30, interval=0.5, what="the Ray workers to exit")
    assert wait_until(lambda: ray_status(head, second) == "STOPPED", 30, interval=0.5, what="stopped")
    assert [j.submission_id for j in submissions(head, job.id)] == [first, second]
    assert len(steps(stack, token, job.id)) < 180  # it did not train to the end
    events = messages(client, job.id)
    assert f"Stopped Ray job {first}: the job was paused" in events
    assert any(m.startswith(f"Training paused: Ray job {first} stopped") for m in events)
    assert f"Training started on Ray job {second} (attempt 2)" in events
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def only_train_worker(stack: Stack, **env: str) -> Proc:
    """Stop the train workers started so far: only the one started here takes the next job."""
    for proc in stack.workers:
        if "worker-train" in proc.log.name:
            proc.stop()
    return train_worker(stack, **env)


def test_the_wandb_key_reaches_a_ray_run_in_a_file_never_in_the_submission(
    stack: Stack, head: RayHead, local_base_model: Path
) -> None:
    secret = "wandb-key-that-must-not-leak-0123456789"
    # Nowhere to send the run, should it get that far: the job is cancelled once submitted.
    worker = only_train_worker(
        stack, TUNELINE_WANDB_API_KEY=secret, TUNELINE_WANDB_BASE_URL=f"http://127.0.0.1:{free_port()}"
    )
    token = stack.key()
    client = sdk(stack, token)
    job = create_on_ray(client, upload(client, chat_rows(16)), local_base_model, workers=1, wandb="funds")
    sid = f"tuneline-{job.id}-0"
    wait_until(lambda: submissions(head, job.id), 120, interval=0.5, what="the Ray submission")

    # The run finds the key in a file only its user reads, named (not quoted) by its spec ...
    folder = Path(stack.env["TUNELINE_DATA_DIR"]) / "jobs" / job.id
    key_file = folder / "secrets" / "wandb-api-key"
    assert key_file.read_text() == secret
    assert key_file.stat().st_mode & 0o777 == 0o600
    spec = (folder / "SPEC.json").read_text()
    wandb = json.loads(spec)["integrations"]["wandb"]
    assert (wandb["mode"], wandb["api_key_file"]) == ("online", str(key_file.resolve()))
    # ... and nowhere the Ray dashboard, the Jobs API, the job or the logs show.
    info = JobSubmissionClient(head.address).get_job_info(sid)
    shown = json.dumps([info.entrypoint, info.runtime_env, info.metadata, spec], default=str)
    assert "WANDB_API_KEY" not in shown and secret not in shown
    assert secret not in json.dumps(get_json(stack, token, f"/v1/fine_tuning/jobs/{job.id}"))
    assert all(secret not in m for m in messages(client, job.id))

    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    wait_until(lambda: ray_status(head, sid) == "STOPPED", 60, interval=0.5, what="the Ray job to stop")
    wait_until(lambda: not key_file.exists(), 30, interval=0.5, what="the key file to go")
    worker.stop()
    assert secret not in worker.log.read_text(errors="replace")
    assert secret not in JobSubmissionClient(head.address).get_job_logs(sid)


def test_an_unreachable_ray_cluster_fails_the_job_clearly(stack: Stack, local_base_model: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    worker = only_train_worker(stack, TUNELINE_RAY_ADDRESS=nowhere)
    token = stack.key()
    client = sdk(stack, token)
    file_id = upload(client, chat_rows(16))
    job = create_on_ray(client, file_id, local_base_model, n_epochs=1)
    failed = wait_terminal(client, job.id, timeout=120)
    worker.stop()
    assert failed.status == "failed"
    assert failed.error.code == "ray_unreachable", failed.error
    assert nowhere in failed.error.message and "TUNELINE_RAY_ADDRESS" in failed.error.message
