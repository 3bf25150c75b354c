"""Per-provider-account poll rate limit with real workers, beat and the sandbox (DESIGN §5).

No timing assertion: the sandbox records when it answered each read a poll makes (a list page,
a job retrieve, its events or checkpoints), and
the test checks, over windows computed from those recorded times, that no window holds more
polls than the budget allows; and that every job still completes (refused polls are
rescheduled, not dropped).
"""

from __future__ import annotations

import json

import httpx2
import pytest

from tests.integration.conftest import make_stack
from tests.integration.test_jobs_e2e import sdk, upload_processed
from tests.support.procs import start_beat, wait_until

pytestmark = pytest.mark.slow

RATE = 2.0  # polls per second for the sandbox account
BURST = 2  # Settings.poll_burst for that rate
JOBS = 5
# The sandbox stamps a read when it arrives, a little after the worker got its token; allow the
# difference in that latency between two reads (one more read at most) at the window's edges.
LATENCY_SLACK = 1
# A request of several calls passes once one call's room is free and overdraws the rest
# (``ratelimit``): the largest request is a job's own sync, 3 calls.
OVERDRAW = 2


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory, secret_key):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("rate")
    s = make_stack(
        workdir,
        secret_key,
        TUNELINE_SANDBOX_TIME_SCALE="0.5",
        TUNELINE_POLL_INTERVAL_S="0.2",
        TUNELINE_POLL_RATE_PER_S=str(RATE),
    )
    s.start_worker()
    s.beat = start_beat(s.env, workdir / "beat.log", workdir)
    yield s
    s.stop()
    s.redis.stop()


def test_polls_of_one_account_stay_within_the_rate_and_every_job_completes(limited_stack):
    stack = limited_stack
    client = sdk(stack, stack.key())
    rows = [
        {"messages": [{"role": "user", "content": f"问{i}"}, {"role": "assistant", "content": f"答{i}"}]}
        for i in range(20)
    ]
    training = upload_processed(
        client, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    )
    made = [
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"provider": "sandbox"}
        ).id
        for _ in range(JOBS)
    ]
    final = wait_until(lambda: finished(client, made), 120, interval=0.5, what="all jobs to finish")
    assert final == ["succeeded"] * JOBS, stack.logs()

    reads = httpx2.get(
        stack.base_url + "/sandbox/v1/_stats", headers={"Authorization": "Bearer sandbox-key"}, timeout=10
    ).json()["job_reads"]
    # Each job runs ~7 s; unlimited, beat's 1 s scan would poll all of them every second (5/s, so
    # 15 in 3 s against a budget of 9): the windows below would not hold.
    assert len(reads) >= JOBS
    for window in (1.0, 3.0, reads[-1] - reads[0]):
        for i, start in enumerate(reads):
            inside = sum(1 for t in reads[i:] if t <= start + window)
            assert inside <= BURST + RATE * window + OVERDRAW + LATENCY_SLACK, (window, start, inside)


def finished(client, job_ids: list[str]) -> list[str] | None:  # type: ignore[no-untyped-def]
    found = [client.fine_tuning.jobs.retrieve(j).status for j in job_ids]
    return found if all(s in ("succeeded", "failed", "cancelled") for s in found) else None
