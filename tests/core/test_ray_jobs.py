"""The Jobs API client side of the Ray executor without a cluster: submission ids, the entry
point's command line, the protocol in a job log, Ray's states in Tuneline's terms, and an
unreachable cluster."""

from __future__ import annotations

import json
import shlex

import pytest

from service.core.ray_jobs import (
    CANCELLED,
    FAILED,
    PROTOCOL_MARK,
    QUEUED,
    RAY_UNREACHABLE,
    RUNNING,
    SUCCEEDED,
    RayCompute,
    RayJob,
    RayJobs,
    RayJobsError,
    RayRun,
    entrypoint,
    parse_protocol,
    submission_id,
)
from tests.support.procs import free_port
from tests.support.ray import RAY_MISSING, ray_installed


def test_a_submission_id_is_the_job_and_its_attempt() -> None:
    assert submission_id("ftjob-abc123", 0) == submission_id("ftjob-abc123", 0) == "tuneline-ftjob-abc123-0"
    assert submission_id("ftjob-abc123", 1) != submission_id("ftjob-abc123", 0)
    assert submission_id("ftjob-a/b c", 2) == "tuneline-ftjob-a_b_c-2"  # only [A-Za-z0-9_-]
    with pytest.raises(ValueError):
        submission_id("ftjob-abc123", -1)


def test_the_entrypoint_is_read_back_by_the_ray_run_itself() -> None:
    from service.training.ray_train import _args

    compute = RayCompute(
        num_workers=4, gpus_per_worker=1, storage="s3://bucket/tuneline runs", python="python3"
    )
    argv = shlex.split(entrypoint("/data/jobs/ftjob-1/SPEC.json", compute))
    assert argv[:3] == ["python3", "-m", "service.training.ray_train"]
    args = _args(argv[3:])
    assert (args.spec, args.num_workers, args.gpus_per_worker, args.cpus_per_worker) == (
        "/data/jobs/ftjob-1/SPEC.json",
        4,
        1.0,
        1.0,
    )
    assert args.storage == "s3://bucket/tuneline runs" and args.max_failures == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_workers": 0, "storage": "/s"}, "num_workers"),
        ({"gpus_per_worker": -1, "storage": "/s"}, "gpus_per_worker"),
        ({}, "TUNELINE_RAY_STORAGE"),
    ],
)
def test_compute_refuses_what_ray_could_not_run(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RayCompute(**fields)  # type: ignore[arg-type]


def test_protocol_lines_are_picked_from_the_job_log_whole_lines_only() -> None:
    started = {"type": "started", "total_steps": 20, "device": "cpu"}
    metrics = {"type": "metrics", "step": 1, "train_loss": 8.0, "note": "损失"}
    log = (
        "2026-12-01 15:34:31,358\tINFO worker.py:1691 -- Using address 10.0.0.1:6379\n"
        f"{PROTOCOL_MARK}{json.dumps(started)}\n"
        '(RayTrainWorker pid=23948) {"type": "metrics", "step": 99}\n'  # a worker's forwarded output
        f"{PROTOCOL_MARK}not json\n"
        f"{PROTOCOL_MARK}{json.dumps(metrics, ensure_ascii=False)}\n"
        f"{PROTOCOL_MARK}" + '{"type": "metrics", "st'  # still being written
    )
    messages, consumed = parse_protocol(log)
    assert messages == [started, metrics]
    assert log[consumed:] == f"{PROTOCOL_MARK}" + '{"type": "metrics", "st'
    assert parse_protocol(log[consumed:] + 'ep": 2}\n')[0] == [{"type": "metrics", "step": 2}]


def run_state(**fields: object) -> RayRun:
    return RayRun(jobs=None, submission_id="tuneline-ftjob-1-0", **fields)  # type: ignore[arg-type]


def job(status: str, message: str = "") -> RayJob:
    return RayJob("tuneline-ftjob-1-0", status, message)


def test_ray_states_map_onto_tuneline_statuses() -> None:
    pending = (
        "Job has not started yet. It may be waiting for resources (CPUs, GPUs, memory) to become available."
    )
    assert run_state().status_for(job("PENDING", pending)) == (QUEUED, pending)
    # The driver runs, but until the workers train the job is still waiting for the cluster.
    assert run_state().status_for(job("RUNNING"))[0] == QUEUED
    busy = "the Ray cluster is busy: the workers need 2 CPU, 0 CPU free now"
    assert run_state(waiting_reason=busy).status_for(job("RUNNING")) == (QUEUED, busy)
    assert run_state(started=True).status_for(job("RUNNING"))[0] == RUNNING
    assert (
        run_state(started=True).status_for(job("STOPPED", "Job was intentionally stopped."))[0] == CANCELLED
    )
    finished = {"type": "finished", "steps": 20}
    assert run_state(started=True, finished=finished).status_for(job("SUCCEEDED"))[0] == SUCCEEDED


def test_a_failed_run_says_why() -> None:
    refused = run_state(error={"code": "insufficient_resources", "message": "the Ray cluster is too small"})
    assert refused.status_for(job("FAILED", "exit code 1")) == (FAILED, "the Ray cluster is too small")
    assert refused.error == {"code": "insufficient_resources", "message": "the Ray cluster is too small"}

    crashed = run_state(started=True)
    status, reason = crashed.status_for(job("FAILED", "Job entrypoint command failed with exit code 137"))
    assert status == FAILED and "exit code 137" in reason and crashed.error is not None
    assert crashed.error["code"] == "training_failed"

    silent = run_state(started=True)  # exit 0 without a finished line is not a success
    assert silent.status_for(job("SUCCEEDED"))[0] == FAILED
    assert silent.error is not None and "without reporting a finished run" in silent.error["message"]


@pytest.mark.skipif(not ray_installed(), reason=RAY_MISSING)
def test_an_unreachable_cluster_is_a_clear_error() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RayJobsError) as caught:
        RayJobs(address)
    assert caught.value.code == RAY_UNREACHABLE
    assert address in caught.value.message and "TUNELINE_RAY_ADDRESS" in caught.value.message


def test_no_address_is_a_clear_error() -> None:
    with pytest.raises(RayJobsError, match="set TUNELINE_RAY_ADDRESS") as caught:
        RayJobs("")
    assert caught.value.code == RAY_UNREACHABLE
