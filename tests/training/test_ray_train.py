"""Training on a real local Ray head through the Jobs API: 2 DDP workers match one process of the
same global batch, a duplicated submit attaches to the run it started, stop stops it, a cluster
too small for the run fails it, a lost worker resumes from Ray Train's last checkpoint, and a
reinforcement (GRPO) run trains on 2 workers with its checkpoints published to the job."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import wait_until
from tests.support.ray import RAY_MISSING, RayHead, ray_installed, ray_processes
from tests.support.training import (
    KEYWORD_GRADER,
    TORCH_MISSING,
    child_spec,
    run_child,
    training_env,
    write_spec,
)

pytest.importorskip("torch", reason=TORCH_MISSING)
if not ray_installed():
    pytest.skip(RAY_MISSING, allow_module_level=True)

from service.core.ray_jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Progress,
    RayCompute,
    RayJobs,
    RayRun,
    entrypoint,
    submission_id,
)
from service.training.checkpoints import COMPLETE_MARKER

pytestmark = pytest.mark.slow

# What a Ray job on this machine needs beyond the cluster's own environment: no hub, one thread.
JOB_ENV = {
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
RUN_TIMEOUT_S = 480  # Ray starts 3 processes that each import torch; the machine is shared
# 2 workers × batch b against 1 process × batch 2b sees the same examples in each step: accelerate
# shards the seeded sampler's batches of b round-robin over the workers, so step k is batches
# 2k and 2k+1 on both sides; the loss is averaged over the tokens of all workers
# (average_tokens_across_devices), and the gradients are averaged by DDP's all-reduce. What may
# differ is float32 summation order (gloo's all-reduce, per-worker padding), a few ulps per step
# that 20 steps at lr 3e-3 do not amplify past 1e-4 (measured: at most 1e-6 after rounding).
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    head = RayHead(tmp_path_factory.mktemp("ray") / "head.log", num_cpus=2).start(training_env())
    yield head
    head.stop()


@pytest.fixture(scope="module")
def jobs(ray_head: RayHead) -> RayJobs:
    return RayJobs(ray_head.address)


def job_spec(tmp_path: Path, name: str, model: Path, train: Path, **hyper: Any) -> Path:
    hyperparameters = {
        "n_epochs": 1,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "checkpoint_every": 10,
        "seed": 1,
    }
    hyperparameters.update(hyper)
    return write_spec(
        tmp_path / f"{name}.json",
        job_id=f"ftjob-{name}",
        base_model=str(model),
        method="full",
        train_file=str(train),
        output_dir=str(tmp_path / name),
        hyperparameters=hyperparameters,
        device="cpu",
        threads=1,
    )


def submit(jobs: RayJobs, spec: Path, tmp_path: Path, attempt: int = 0, **compute: Any) -> tuple[str, bool]:
    job_id = json.loads(spec.read_text())["job_id"]
    sid = submission_id(job_id, attempt)
    settings = {"num_workers": 2, "storage": str(tmp_path / "ray-storage"), "python": sys.executable}
    settings.update(compute)
    _, created = jobs.submit(
        sid,
        entrypoint(str(spec), RayCompute(**settings)),
        env=JOB_ENV,
        metadata={"tuneline_job_id": job_id, "tuneline_attempt": str(attempt)},
    )
    return sid, created


def follow(run: RayRun, until: Callable[[Progress], bool], timeout: float = RUN_TIMEOUT_S) -> list[Progress]:
    """Poll the run (as the train task will) until ``until`` holds; every poll is returned."""
    seen: list[Progress] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = run.poll()
        seen.append(progress)
        if until(progress) or progress.ray_status in ("STOPPED", "SUCCEEDED", "FAILED"):
            return seen
        time.sleep(0.5)
    log = run.jobs.logs(run.submission_id)[-3000:]
    raise AssertionError(f"run {run.submission_id} did not get there in {timeout}s; log tail:\n{log}")


def wait_registered(tmp_path: Path, job_id: str) -> None:
    """Wait until Ray Train has registered a checkpoint of the run: the workers' upload is done
    when ray.train.report returns, and it counts once the controller has recorded it in its
    snapshot on the storage (a worker lost before that resumes from the checkpoint before)."""
    snapshot = tmp_path / "ray-storage" / f"tuneline-{job_id}" / "checkpoint_manager_snapshot.json"
    wait_until(
        lambda: json.loads(snapshot.read_text()).get("latest_checkpoint_result"), 60, 0.2, what="a checkpoint"
    )


def registered_step(tmp_path: Path, job_id: str) -> int | None:
    """The step of the newest checkpoint Ray Train has registered for the run (None before one)."""
    snapshot = tmp_path / "ray-storage" / f"tuneline-{job_id}" / "checkpoint_manager_snapshot.json"
    latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    return None if not latest else int(latest["metrics"]["step"])


def messages(seen: list[Progress], kind: str) -> list[dict[str, Any]]:
    return [m for p in seen for m in p.messages if m["type"] == kind]


def test_two_workers_match_one_process_of_the_same_global_batch(
    jobs: RayJobs, tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    train = data_dir / "qa_train.jsonl"  # 160 examples: 20 steps of 8
    sid, created = submit(jobs, job_spec(tmp_path, "ddp", tiny_model, train), tmp_path)
    assert created
    seen = follow(RayRun(jobs, sid), lambda p: False)
    reference = run_child(
        job_spec(tmp_path, "single", tiny_model, train, batch_size=8), tmp_path / "single.log"
    )
    assert reference.returncode == 0, reference.log

    statuses = [p.status for p in seen]
    assert statuses[-1] == SUCCEEDED, (seen[-1], jobs.logs(sid)[-3000:])
    assert statuses[0] == QUEUED and RUNNING in statuses
    assert statuses.index(RUNNING) > statuses.index(QUEUED)

    started = messages(seen, "started")
    assert len(started) == 1 and started[0]["total_steps"] == 20 and started[0]["train_examples"] == 160
    assert started[0]["resumed_from_step"] is None
    ray_losses = {m["step"]: m["train_loss"] for m in messages(seen, "metrics")}
    single_losses = {m["step"]: m["train_loss"] for m in reference.of("metrics")}
    assert sorted(ray_losses) == list(range(1, 21)) == sorted(single_losses)
    for step in ray_losses:
        assert ray_losses[step] == pytest.approx(single_losses[step], abs=LOSS_TOLERANCE), step
    assert ray_losses[20] < ray_losses[1] - 1.0  # it trained

    assert [c["step"] for c in messages(seen, "checkpoint")] == [10, 20]
    finished = messages(seen, "finished")
    assert len(finished) == 1 and finished[0]["steps"] == 20
    assert finished[0]["model_dir"] == str(tmp_path / "ddp" / "model")
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()
    with (tmp_path / "ddp" / "result.csv").open(encoding="utf-8") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 21))
    # Ray Train persisted the checkpoints (the newest 3 of them) under the storage path.
    persisted = [
        p for p in (tmp_path / "ray-storage" / "tuneline-ftjob-ddp").glob("checkpoint_*") if p.is_dir()
    ]
    assert len(persisted) == 2
    assert all((p / "checkpoint" / "trainer_state.json").is_file() for p in persisted)


def test_a_duplicate_submit_attaches_stop_ends_the_run_and_the_next_attempt_resumes(
    jobs: RayJobs, ray_head: RayHead, tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = job_spec(tmp_path, "stop", tiny_model, data_dir / "qa_train.jsonl", n_epochs=2)  # 40 steps
    sid, created = submit(jobs, spec, tmp_path)
    again, created_again = submit(jobs, spec, tmp_path)  # a retried Celery task does the same
    assert created and not created_again and again == sid
    from ray.job_submission import JobSubmissionClient

    runs = [
        j
        for j in JobSubmissionClient(ray_head.address).list_jobs()
        if j.metadata.get("tuneline_job_id") == "ftjob-stop"
    ]
    assert [j.submission_id for j in runs] == [sid]

    run = RayRun(jobs, sid)
    seen = follow(run, lambda p: any(m["type"] == "metrics" and m["step"] >= 12 for m in p.messages))
    assert seen[-1].status == RUNNING, seen[-1]
    wait_registered(tmp_path, "ftjob-stop")
    assert ray_processes(ray_head, "RayTrainWorker")

    assert jobs.stop(sid) is True
    seen += follow(run, lambda p: False, timeout=60)
    assert seen[-1].ray_status == "STOPPED" and seen[-1].status == CANCELLED, seen[-1]
    # No further steps: the training workers are gone, not merely unheard of.
    wait_until(lambda: not ray_processes(ray_head, "RayTrainWorker"), 30, 0.5, what="the Ray workers to exit")
    assert not messages(seen, "finished") and not (tmp_path / "stop" / "model").exists()
    assert jobs.stop(sid) is False  # stopping again is harmless

    # The next attempt (a resumed pause, a re-queued job) is a new submission of the same run name:
    # Ray Train hands it the run's newest registered checkpoint.
    sid_1, created = submit(jobs, spec, tmp_path, attempt=1)
    assert created and sid_1 != sid
    resumed = follow(RayRun(jobs, sid_1), lambda p: False)
    assert resumed[-1].status == SUCCEEDED, (resumed[-1], jobs.logs(sid_1)[-3000:])
    # From the newest checkpoint of the stopped attempt (10, or 20 when stop came after it).
    [started] = messages(resumed, "started")
    assert started["resumed_from_step"] in [c["step"] for c in messages(seen, "checkpoint")]
    assert [m["step"] for m in messages(resumed, "metrics")] == list(
        range(started["resumed_from_step"] + 1, 41)
    )
    with (tmp_path / "stop" / "result.csv").open(encoding="utf-8") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 41))


def test_a_cluster_too_small_for_the_run_fails_it_with_the_reason(
    jobs: RayJobs, tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = job_spec(tmp_path, "big", tiny_model, data_dir / "qa_train.jsonl")
    sid, _ = submit(jobs, spec, tmp_path, num_workers=3, resource_wait_s=0)
    seen = follow(RayRun(jobs, sid), lambda p: False)
    assert seen[-1].ray_status == "FAILED" and seen[-1].status == FAILED
    error = seen[-1].error
    assert error is not None and error["code"] == "insufficient_resources", error
    assert "3 workers" in error["message"] and "3 CPU" in error["message"] and "2 CPU" in error["message"]
    assert not messages(seen, "started")


def test_a_lost_worker_resumes_from_the_last_checkpoint(
    jobs: RayJobs, ray_head: RayHead, tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = job_spec(tmp_path, "lost", tiny_model, data_dir / "qa_train.jsonl", n_epochs=2)  # 40 steps
    sid, _ = submit(jobs, spec, tmp_path, max_failures=1)
    run = RayRun(jobs, sid)
    # Kill a worker once a checkpoint exists. The run may be anywhere past it by the time this
    # poll sees it (an idle machine trains faster than the logs are read), so what the test pins
    # is the rule, not a step: the next attempt starts from the newest checkpoint Ray Train
    # registered before the kill. No checkpoint can be reported after it (reporting one takes
    # every worker), but one both workers reported just before it may still be registering when
    # the snapshot is read here (CI saw 10 read, 20 resumed): that one, and no other, may follow.
    before = follow(run, lambda p: any(m["type"] == "checkpoint" for m in p.messages))
    wait_registered(tmp_path, "ftjob-lost")
    workers = ray_processes(ray_head, "RayTrainWorker")
    assert len(workers) == 2
    workers[-1].kill()
    registered = registered_step(tmp_path, "ftjob-lost")
    assert registered is not None and registered % 10 == 0 and registered < 40

    after = follow(run, lambda p: False)
    assert after[-1].status == SUCCEEDED, (after[-1], jobs.logs(sid)[-3000:])
    started = messages(before + after, "started")
    resumed = [s["resumed_from_step"] for s in started]
    assert resumed[0] is None and len(resumed) == 2, resumed
    assert resumed[1] in (registered, registered + 10) and resumed[1] < 40, (resumed, registered)
    start = resumed[1]
    metrics = messages(before + after, "metrics")
    # Every step's line came through.
    assert sorted({m["step"] for m in metrics if m["step"] <= start}) == list(range(1, start + 1))
    redone = [m["step"] for m in messages(after, "metrics") if m["step"] > start]
    assert redone[-(40 - start) :] == list(range(start + 1, 41))
    # Steps the first attempt reported past the checkpoint were redone from it with the same
    # model, optimizer state and data, so they repeat their losses.
    losses: dict[int, list[float]] = {}
    for m in metrics:
        if m["step"] > start:
            losses.setdefault(m["step"], []).append(m["train_loss"])
    for step, seen_losses in losses.items():
        assert seen_losses == pytest.approx([seen_losses[0]] * len(seen_losses), abs=LOSS_TOLERANCE), step
    assert messages(after, "finished")[0]["steps"] == 40
    with (tmp_path / "lost" / "result.csv").open(encoding="utf-8") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 41))


def test_reinforcement_trains_on_two_workers_and_publishes_its_checkpoints(
    jobs: RayJobs, tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    """GRPO under DDP (each worker samples and grades its share of the answers); rank 0 copies each
    checkpoint's model into the job's checkpoints, where ``ft:...:ckpt-step-N`` is served from."""
    spec = child_spec(
        tmp_path,
        "grpo",
        tiny_model,
        data_dir / "rl_train.jsonl",
        method="reinforcement",
        grader=KEYWORD_GRADER,
        hyperparameters={
            "max_steps": 4,
            "batch_size": 8,
            "max_completion_length": 4,
            "checkpoint_every": 2,
            "seed": 1,
        },
    )
    sid, _ = submit(jobs, spec, tmp_path)
    seen = follow(RayRun(jobs, sid), lambda p: False)
    assert seen[-1].status == SUCCEEDED, (seen[-1], jobs.logs(sid)[-3000:])
    metrics = messages(seen, "metrics")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(0 <= m["train_reward_mean"] <= 1 for m in metrics)

    kept = tmp_path / "grpo" / "checkpoints"
    published = messages(seen, "checkpoint")
    assert [(c["step"], c["path"]) for c in published] == [
        (2, str(kept / "checkpoint-2")),
        (4, str(kept / "checkpoint-4")),
    ]
    for step in (2, 4):
        folder = kept / f"checkpoint-{step}"
        assert (folder / "adapter_model.safetensors").is_file() and (folder / COMPLETE_MARKER).is_file()
        assert not (folder / "optimizer.pt").exists()  # Ray Train's copy is the one runs resume from
    meta = json.loads((tmp_path / "grpo" / "model" / "tuneline-model.json").read_text(encoding="utf-8"))
    assert meta["method"] == "reinforcement"
