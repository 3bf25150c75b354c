"""Fault tests with real processes: workers killed with SIGKILL mid-pipeline, Redis killed and
restarted from its AOF, a provider answering 429/500: every job completes, one create each."""

from __future__ import annotations

import contextlib
import io
import os
import random
import time
from collections.abc import Iterator

import httpx2
import pytest
from openai import OpenAI

from tests.integration.conftest import Stack, make_stack
from tests.support.procs import start_beat, wait_until

pytestmark = pytest.mark.slow

QUEUES = "datasets,provider,poll,webhooks,maintenance"
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[Stack]:
    """A stack on Redis with AOF (appendfsync always) and a short broker visibility timeout, so
    messages of a killed worker come back within seconds instead of an hour."""
    workdir = tmp_path_factory.mktemp("durable")
    s = make_stack(
        workdir,
        secret_key,
        durable=True,
        TUNELINE_SANDBOX_TIME_SCALE="0.02",
        TUNELINE_POLL_INTERVAL_S="0.5",
        TUNELINE_VISIBILITY_TIMEOUT_S="6",
    )
    s.start_worker(QUEUES, "a")
    s.beat = start_beat(s.env, workdir / "beat.log", workdir)
    yield s
    s.stop()
    s.redis.stop()


def client_for(stack: Stack, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=5, timeout=30)


def training_file(client: OpenAI) -> str:
    rows = "".join(f'{{"prompt": "问题 {i}", "completion": "回答 {i}"}}\n' for i in range(30))
    f = client.files.create(file=("t.jsonl", io.BytesIO(rows.encode())), purpose="fine-tune")
    wait_until(lambda: client.files.retrieve(f.id).status == "processed", 60, what="file processed")
    return f.id


def creates_by_job(stack: Stack) -> dict[str, int]:
    r = httpx2.get(
        stack.base_url + "/sandbox/v1/_stats", headers={"Authorization": "Bearer sandbox-key"}, timeout=10
    )
    return r.json()["creates_by_tuneline_job"]  # type: ignore[no-any-return]


def wait_all(client: OpenAI, job_ids: list[str], timeout: float, stack: Stack) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if status.get(job_id) not in TERMINAL:
                with contextlib.suppress(Exception):
                    status[job_id] = client.fine_tuning.jobs.retrieve(job_id).status
        if all(s in TERMINAL for s in status.values()) and len(status) == len(job_ids):
            return status
        time.sleep(0.5)
    pending = {j: s for j, s in status.items() if s not in TERMINAL}
    raise AssertionError(f"jobs not finished: {pending}\n{stack.logs()}")


def test_sigkill_of_workers_in_every_stage(durable: Stack):
    client = client_for(durable, durable.key())
    file_id = training_file(client)
    jobs = []
    for i in range(12):
        # Every third job also meets an ambiguous create failure (created, then 500).
        extra = {"provider": "sandbox"}
        if i % 3 == 0:
            extra["sandbox"] = {"create_fault": {"when": "after", "count": 1}}
        jobs.append(
            client.fine_tuning.jobs.create(
                model="gpt-4o-mini-2024-07-18", training_file=file_id, extra_body=extra
            ).id
        )
    rng = random.Random(5)
    stages_hit: set[str] = set()
    for _ in range(8):
        time.sleep(rng.uniform(0.3, 1.2))
        for job_id in jobs:
            stages_hit.add(client.fine_tuning.jobs.retrieve(job_id).stage)  # type: ignore[attr-defined]
        worker = durable.workers[-1]
        worker.kill9()
        durable.start_worker(QUEUES, f"k{len(durable.workers)}")
    status = wait_all(client, jobs, 180, durable)
    assert set(status.values()) == {"succeeded"}, status
    creates = creates_by_job(durable)
    assert all(creates.get(j) == 1 for j in jobs), {j: creates.get(j) for j in jobs}
    # Kill points are random (seeded): which stages they hit is reported, not asserted.
    print("stages seen at kill times:", sorted(stages_hit))


def test_provider_429_and_500_for_a_while(durable: Stack):
    client = client_for(durable, durable.key())
    file_id = training_file(client)
    jobs = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=file_id,
            extra_body={
                "provider": "sandbox",
                "sandbox": {
                    "rate_limit": {"count": 3, "retry_after": 1},
                    "server_errors": 3,
                    "create_fault": {"when": "before", "count": 2},
                },
            },
        ).id
        for _ in range(3)
    ]
    status = wait_all(client, jobs, 120, durable)
    assert set(status.values()) == {"succeeded"}, status
    creates = creates_by_job(durable)
    assert all(creates.get(j) == 1 for j in jobs)
    events = [e.message for e in client.fine_tuning.jobs.list_events(jobs[0], limit=100).data]
    assert any("successfully completed" in m for m in events)


# The issue asks for 200; on CI's 2 cores the suite runs 40 (TUNELINE_FAULT_JOBS=200 for the full count).
REDIS_FAULT_JOBS = int(os.environ.get("TUNELINE_FAULT_JOBS", "40"))


@pytest.mark.timeout(900)
def test_redis_sigkill_after_jobs_were_accepted(durable: Stack):
    client = client_for(durable, durable.key())
    file_id = training_file(client)
    jobs = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=file_id, extra_body={"provider": "sandbox"}
        ).id
        for _ in range(REDIS_FAULT_JOBS)
    ]
    durable.redis.restart()  # SIGKILL, then start again from the AOF
    status = wait_all(client, jobs, 420, durable)
    assert set(status.values()) == {"succeeded"}, {
        s: list(status.values()).count(s) for s in set(status.values())
    }
    creates = creates_by_job(durable)
    assert all(creates.get(j) == 1 for j in jobs)
