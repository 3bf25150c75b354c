"""Fault tests with real processes: workers killed with SIGKILL inside each pipeline stage and
mid-webhook-delivery, Redis killed and restarted from its AOF, a provider answering 429/500:
every job completes, one create each, every event delivered with its webhook-id."""

from __future__ import annotations

import contextlib
import io
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
import standardwebhooks
from openai import OpenAI

from service.core.store import jobs as repo
from service.core.store import keys
from tests.integration.conftest import Stack, make_stack
from tests.support.procs import start_beat, wait_until
from tests.support.receivers import HookReceiver

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
        TUNELINE_POLL_LOCK_S="10",  # a killed poll's lock holds its job this long
        TUNELINE_VISIBILITY_TIMEOUT_S="6",
        TUNELINE_MAX_UPLOAD_BYTES=str(16 * 1024 * 1024),  # room for the large file of the prepare case
    )
    s.start_worker(QUEUES, "a")
    s.beat = start_beat(s.env, workdir / "beat.log", workdir)
    yield s
    s.stop()
    s.redis.stop()


def client_for(stack: Stack, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=5, timeout=30)


def training_file(client: OpenAI, tag: str = "", rows: int = 30, pad: str = "") -> str:
    """Upload a processed training file; ``tag`` makes its bytes unique (uploads are reused by
    content hash, so a case that must reach the provider's upload needs bytes never sent before)."""
    data = "".join(
        f'{{"prompt": "{tag} 问题 {i} {pad}", "completion": "回答 {i} {pad}"}}\n' for i in range(rows)
    )
    f = client.files.create(file=("t.jsonl", io.BytesIO(data.encode())), purpose="fine-tune")
    wait_until(lambda: client.files.retrieve(f.id).status == "processed", 120, what="file processed")
    return f.id


SANDBOX_AUTH = {"Authorization": "Bearer sandbox-key"}


def sandbox_stats(stack: Stack) -> dict[str, Any]:
    r = httpx2.get(stack.base_url + "/sandbox/v1/_stats", headers=SANDBOX_AUTH, timeout=10)
    return r.json()  # type: ignore[no-any-return]


def creates_by_job(stack: Stack) -> dict[str, int]:
    return sandbox_stats(stack)["creates_by_tuneline_job"]  # type: ignore[no-any-return]


def wait_all(
    client: OpenAI,
    job_ids: list[str],
    timeout: float,
    stack: Stack,
    on_tick: Callable[[], None] | None = None,
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        for job_id in job_ids:
            if status.get(job_id) not in TERMINAL:
                with contextlib.suppress(Exception):
                    status[job_id] = client.fine_tuning.jobs.retrieve(job_id).status
        if all(s in TERMINAL for s in status.values()) and len(status) == len(job_ids):
            return status
        time.sleep(0.5)
    pending = {j: s for j, s in status.items() if s not in TERMINAL}
    # Where each one stands in the store (its stage, provider job, poll entry) comes first: the
    # logs that follow are cut short by CI's output.
    where = {j: _where(stack, j) for j in pending}
    raise AssertionError(f"jobs not finished: {pending}\n{where}\n{stack.logs()}")


def _where(stack: Stack, job_id: str) -> dict[str, Any]:
    raw = repo.load(stack.store, job_id) or {}
    fields = ("status", "stage", "stage_changed_at", "provider_job_id", "provider_status", "backend_state")
    due = repo.poll_due_at(stack.store, job_id)
    return {
        **{k: raw.get(k) for k in fields},
        "poll_due_in_s": None if due is None else round(due - time.time(), 1),
        "events": [e["message"] for e in repo.events_since(stack.store, job_id, 0)][-8:],
    }


def restart_worker(stack: Stack) -> None:
    """SIGKILL the worker (its whole process group), then start a fresh one."""
    stack.workers[-1].kill9()
    stack.start_worker(QUEUES, f"k{len(stack.workers)}")


PROVIDER_STAGES = ("provider_validating", "provider_queued", "training")
SLOW_MS = 1500  # long enough to see a call in flight and kill the worker inside it


@dataclass
class KillCase:
    """Where to kill: the job's stages that count as inside, and the sign that a call is in flight."""

    stages: tuple[str, ...]
    # The sandbox operations held open in this stage (slow_in_flight), or None for a local stage
    # (prepare), where the stage's attempt counter shows that its task has started.
    operations: tuple[str, ...] | None
    sandbox: dict[str, Any] = field(default_factory=dict)
    upload_slow_ms: int = 0
    rows: int = 30
    pad: str = ""


KILL_CASES = {
    # Preparing a large file takes seconds of CPU: kill once the prepare task has started.
    "prepare": KillCase(("preparing",), None, rows=20_000, pad="填充" * 40),
    "upload": KillCase(("uploading",), ("files.create",), upload_slow_ms=2 * SLOW_MS),
    # A create held open: the job is created after the kill, so the next attempt must find it.
    "submit": KillCase(("submitting",), ("jobs.create",), {"slow_ms": SLOW_MS}),
    # The poll lock outlives the killed poll (TUNELINE_POLL_LOCK_S, 10 s here).
    "poll": KillCase(
        PROVIDER_STAGES, ("jobs.retrieve", "jobs.events", "jobs.checkpoints"), {"slow_ms": SLOW_MS}
    ),
    "finalize": KillCase(("finalizing",), ("files.content",), {"slow_ms": SLOW_MS}),
}


def inside(stack: Stack, job_id: str, case: KillCase) -> bool:
    job = repo.load(stack.store, job_id)
    if job is None or job["stage"] not in case.stages:
        return False
    if case.operations is None:
        return int(stack.store.r.get(keys.job_attempts(job_id, job["stage"])) or 0) >= 1
    held = sandbox_stats(stack)["slow_in_flight"]
    return any(held.get(op, 0) > 0 for op in case.operations)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("stage", list(KILL_CASES))
def test_sigkill_of_the_worker_inside_each_stage(durable: Stack, stage: str):
    """kill -9 while the job is inside ``stage`` (deterministically: a provider call held open by
    the sandbox, or a large file being prepared); after a restart the job succeeds, one create."""
    case = KILL_CASES[stage]
    client = client_for(durable, durable.key())
    file_id = training_file(client, f"kill-{stage}-{time.time_ns()}", case.rows, case.pad)
    httpx2.put(
        durable.base_url + "/sandbox/v1/_faults",
        headers=SANDBOX_AUTH,
        json={"upload_slow_ms": case.upload_slow_ms},
        timeout=10,
    ).raise_for_status()
    try:
        job_id = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=file_id,
            extra_body={"provider": "sandbox", **({"sandbox": case.sandbox} if case.sandbox else {})},
        ).id
        wait_until(lambda: inside(durable, job_id, case), 120, interval=0.02, what=f"job inside {stage}")
        durable.workers[-1].kill9()
        # Still inside after the kill: the stage's work was cut off, not finished.
        job = repo.load(durable.store, job_id)
        assert job is not None and job["stage"] in case.stages, job
        durable.start_worker(QUEUES, f"k{len(durable.workers)}")
    finally:
        httpx2.put(
            durable.base_url + "/sandbox/v1/_faults",
            headers=SANDBOX_AUTH,
            json={"upload_slow_ms": 0},
            timeout=10,
        )
    status = wait_all(client, [job_id], 240, durable)
    assert status == {job_id: "succeeded"}, (repo.load(durable.store, job_id) or {}).get("error")
    assert creates_by_job(durable).get(job_id) == 1


def test_ambiguous_creates_and_a_worker_killed_at_random(durable: Stack):
    """A few jobs meet an ambiguous create failure (created, then 500) while workers die."""
    client = client_for(durable, durable.key())
    file_id = training_file(client)
    jobs = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=file_id,
            extra_body={"provider": "sandbox", "sandbox": {"create_fault": {"when": "after", "count": 1}}},
        ).id
        for _ in range(4)
    ]
    time.sleep(random.Random(5).uniform(0.3, 1.2))
    restart_worker(durable)
    status = wait_all(client, jobs, 240, durable)
    assert set(status.values()) == {"succeeded"}, status
    creates = creates_by_job(durable)
    assert all(creates.get(j) == 1 for j in jobs), {j: creates.get(j) for j in jobs}


def test_a_lost_preparation_message_is_sent_again_by_the_watchdog(durable: Stack):
    """A file's preparation message is lost (deleted from the broker while no worker ran): beat's
    preparation watchdog sends the task again and the file ends ``processed``."""
    client = client_for(durable, durable.key())
    durable.workers[-1].kill9()
    data = "".join(f'{{"prompt": "lost {i}", "completion": "message {i}"}}\n' for i in range(30))
    f = client.files.create(file=("lost.jsonl", io.BytesIO(data.encode())), purpose="fine-tune")
    assert durable.store.r.delete(keys.broker_queue("datasets")) == 1  # the message, lost
    assert client.files.retrieve(f.id).status == "uploaded"
    # Its watchdog entry falls due now instead of in WATCHDOG_S (120 s).
    assert durable.store.r.zadd(keys.files_preparing(), {f.id: time.time()}, xx=True, ch=True) == 1
    durable.start_worker(QUEUES, f"k{len(durable.workers)}")
    wait_until(lambda: client.files.retrieve(f.id).status == "processed", 120, what="file processed")
    assert durable.store.r.zscore(keys.files_preparing(), f.id) is None


def test_worker_killed_mid_delivery_still_delivers(durable: Stack):
    """The receiver holds the first delivery open; the worker is killed during it; after a restart
    the event arrives (answered 200) with the same webhook-id, and the log says delivered."""
    receiver = HookReceiver(hold_first_s=4.0).start()
    try:
        token = durable.key()
        client = client_for(durable, token)
        file_id = training_file(client)
        job_id = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=file_id,
            extra_body={"provider": "sandbox", "webhook": {"url": receiver.url}},
        ).id
        assert receiver.holding.wait(120), durable.logs()
        restart_worker(durable)
        wait_until(lambda: any(h.answered_at for h in receiver.hits[1:]), 120, what="redelivery answered")
        assert len({h.headers["webhook-id"] for h in receiver.hits}) == 1
        secret = httpx2.get(
            durable.base_url + "/v1/webhooks/default/secret",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()["secret"]
        last = receiver.answered()[-1]
        payload = standardwebhooks.Webhook(secret).verify(last.body, last.headers)
        assert payload["type"] == "fine_tuning.job.succeeded" and payload["data"]["id"] == job_id
        hdr = {"Authorization": f"Bearer {token}"}
        url = f"{durable.base_url}/v1/fine_tuning/jobs/{job_id}/webhook_deliveries"
        wait_until(
            lambda: httpx2.get(url, headers=hdr, timeout=10).json()["data"][0]["status"] == "delivered",
            30,
            what="delivery logged",
        )
        assert len(httpx2.get(url, headers=hdr, timeout=10).json()["data"]) == 1
    finally:
        receiver.stop()


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
    restarts: list[str] = []

    def supervise() -> None:
        # What docker-compose's `restart: unless-stopped` does: Celery's worker can exit on a broker
        # connection loss (a kombu race acking a message while the connection is torn down,
        # "Unrecoverable error: AttributeError ... 'hostname'"); the supervisor starts it again.
        worker = durable.workers[-1]
        if worker.proc is not None and worker.proc.poll() is not None:
            restarts.append(f"worker exited with {worker.proc.returncode}")
            durable.start_worker(QUEUES, f"r{len(durable.workers)}")
        beat = durable.beat
        if beat is not None and beat.proc is not None and beat.proc.poll() is not None:
            restarts.append(f"beat exited with {beat.proc.returncode}")
            beat.start()

    status = wait_all(client, jobs, 420, durable, on_tick=supervise)
    print(f"processes restarted after the Redis kill: {restarts or 'none'}")
    assert set(status.values()) == {"succeeded"}, {
        s: list(status.values()).count(s) for s in set(status.values())
    }
    creates = creates_by_job(durable)
    assert all(creates.get(j) == 1 for j in jobs)
