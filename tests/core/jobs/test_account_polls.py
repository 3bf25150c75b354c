"""Polls that scale: one provider account's due jobs synced from its job list (issue 15).

The real remote backend talks to the sandbox over HTTP (a live server of the app, the official
SDK as its client) with a real Redis; the sandbox counts every read a poll makes by operation
(``_stats.calls``), so each test counts provider calls exactly. The stages run without Celery,
on a manual clock (the sandbox keeps real time; its jobs are made to stay put while counted).
"""

from __future__ import annotations

import dataclasses
import math
import time

import httpx2
import openai
import pytest

from service.core import tasknames
from service.core.backends import registry
from service.core.backends.base import Backend
from service.core.backends.remote import LIST_PAGE, RemoteBackend, remote_state
from service.core.clock import ManualClock
from service.core.jobs import lifecycle, record, states
from service.core.jobs.record import Job
from service.core.jobs.stages import poll
from service.core.jobs.stages.common import StageContext
from service.core.store import jobs as repo
from service.sandbox.store import PREFIX as SANDBOX_PREFIX
from service.settings import Settings
from tests.core.jobs.fakes import FakeProvider, FakeRemoteBackend, new_job, run_task, stage_context

JOBS = 150  # two list pages
# Running at once, and for far longer than a test: nothing changes while calls are counted.
STAY_RUNNING = {"validating_s": 0, "queued_s": 0, "steps": 1000, "step_s": 100}


@pytest.fixture
def sandbox_url(live_base_url: str) -> str:
    return f"{live_base_url}/sandbox/v1"


@pytest.fixture
def clock() -> ManualClock:
    # Whole seconds: the rate limiter stores its time with 14 significant digits, so the budget
    # test's exact boundaries (quarter seconds) hold only on a clock without finer fractions.
    return ManualClock(float(int(time.time())))


def sandbox_backends(settings: Settings, store, url: str) -> dict[str, Backend]:  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=url, api_key=settings.sandbox_api_key, max_retries=0, timeout=30)
    return {"sandbox": RemoteBackend("sandbox", client, f"sandbox:{url}", store, extensions=("sandbox",))}


def calls(url: str, settings: Settings) -> dict[str, int]:
    auth = {"Authorization": f"Bearer {settings.sandbox_api_key}"}
    counted: dict[str, int] = httpx2.get(f"{url}/_stats", headers=auth, timeout=10).json()["calls"]
    return counted


def submitted_jobs(ctx: StageContext, backends: dict[str, Backend], n: int, **params: object) -> list[str]:
    """``n`` jobs taken through prepare, upload and submit: each has its sandbox job.

    The first is prepared; the others, of the same file, take its prepared splits (preparation
    is not under test here, and 2,500 rows each would dominate the test's time).
    """
    made: list[str] = []
    for _ in range(n):
        job_id = new_job(ctx.settings, ctx.store, backends, "sandbox", **params)
        task: str | None = tasknames.JOB_PREPARE
        if made:
            first = record.load(ctx.store, made[0])
            assert first is not None

            def same(j: Job, first: Job = first) -> None:
                j.prepared, j.prepared_stop = first.prepared, first.prepared_stop

            lifecycle.transition(ctx.store, job_id, states.VALIDATING, "uploading", "Prepared", apply=same)
            task = tasknames.JOB_UPLOAD
        while task:
            task = run_task(ctx, task, job_id)
        job = record.load(ctx.store, job_id)
        assert job is not None and job.stage == "provider_validating", job
        made.append(job_id)
    return made


def poll_round(
    ctx: StageContext, clock: ManualClock, handed_on: list[tuple[str, str]] | None = None
) -> list[list[str]]:
    """One interval later, every due job polled in its batches (what beat and the tasks do);
    the tasks the polls hand on are collected in ``handed_on``."""
    sink = [] if handed_on is None else handed_on
    clock.advance(ctx.settings.poll_interval_s)
    batches = poll.claim_due_batches(ctx)
    for batch in batches:
        poll.run_polls(ctx, batch, lambda task, job_id: sink.append((task, job_id)))
    return batches


def since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_n_jobs_of_one_account_cost_list_pages_plus_calls_for_changed_jobs(
    settings, store, sandbox_url, clock
):
    backends = sandbox_backends(settings, store, sandbox_url)
    ctx = stage_context(dataclasses.replace(settings, poll_rate_per_s=0), store, backends, clock)
    made = submitted_jobs(ctx, backends, JOBS, sandbox=STAY_RUNNING)
    pages = math.ceil(JOBS / LIST_PAGE)

    # Round 1: every job changed (validating_files when created, running now): its events and
    # checkpoints are read once; no job is retrieved on its own.
    before = calls(sandbox_url, settings)
    batches = poll_round(ctx, clock)
    changed = since(before, calls(sandbox_url, settings))
    assert sorted(j for b in batches for j in b) == sorted(made)
    assert changed.pop("jobs.events") == JOBS and changed.pop("jobs.checkpoints") == JOBS
    assert 1 <= changed.pop("jobs.list") <= len(batches) * pages and changed == {}
    for job_id in made:
        job = record.load(store, job_id)
        assert job is not None and job.status == states.RUNNING and job.provider_status == "running"
        events, _ = repo.list_events(store, job_id, None, 100)
        assert any(e["message"] == "Provider status: running" for e in events)

    # Round 2: nothing changed: list pages only, a few calls for 150 jobs.
    before = calls(sandbox_url, settings)
    batches = poll_round(ctx, clock)
    quiet = since(before, calls(sandbox_url, settings))
    assert len(batches) == pages and set(quiet) == {"jobs.list"}
    assert quiet["jobs.list"] <= len(batches) * pages  # O(N/100): each batch reads <= every page
    assert quiet["jobs.list"] / JOBS < 0.3 / 10  # far under the 0.3 calls per job and interval

    # A running job's events grow where the list cannot show it: read again once they are stale.
    clock.advance(settings.poll_detail_interval_s)
    before = calls(sandbox_url, settings)
    poll_round(ctx, clock)
    stale = since(before, calls(sandbox_url, settings))
    assert stale["jobs.events"] == JOBS and stale["jobs.checkpoints"] == JOBS and "jobs.retrieve" not in stale


def test_a_job_the_list_does_not_show_gets_its_own_poll_and_ends(settings, store, sandbox_url, clock):
    backends = sandbox_backends(settings, store, sandbox_url)
    ctx = stage_context(dataclasses.replace(settings, poll_rate_per_s=0), store, backends, clock)
    shown, hidden = submitted_jobs(ctx, backends, 2, sandbox={**STAY_RUNNING, "steps": 1, "step_s": 0})
    job = record.load(store, hidden)
    assert job is not None and job.provider_job_id
    # The provider's list lags (or lost it): the job is retrievable but not listed.
    store.r.zrem(f"{SANDBOX_PREFIX}:jobs", job.provider_job_id)
    before = calls(sandbox_url, settings)
    handed_on: list[tuple[str, str]] = []
    poll_round(ctx, clock, handed_on)
    counted = since(before, calls(sandbox_url, settings))
    assert sorted(handed_on) == sorted([(tasknames.JOB_FINALIZE, shown), (tasknames.JOB_FINALIZE, hidden)])
    assert counted["jobs.retrieve"] == 1  # the hidden one, on its own
    assert counted["jobs.events"] == 2 and counted["jobs.checkpoints"] == 2
    for job_id in (shown, hidden):  # both ended at the provider and were seen ending
        job = record.load(store, job_id)
        assert job is not None and job.stage == "finalizing", job
        assert remote_state(job).fine_tuned_model


def test_every_provider_call_takes_the_accounts_rate_budget(settings, store, sandbox_url, clock):
    backends = sandbox_backends(settings, store, sandbox_url)
    limited = dataclasses.replace(settings, poll_rate_per_s=4)  # burst 4
    made = submitted_jobs(stage_context(settings, store, backends, clock), backends, 5, sandbox=STAY_RUNNING)
    ctx = stage_context(limited, store, backends, clock)
    before = calls(sandbox_url, settings)
    batches = poll_round(ctx, clock)  # the clock stands still: only the burst is there
    spent = since(before, calls(sandbox_url, settings))
    # One list page, then events and checkpoints of two jobs: 5 calls, the burst of 4 plus one
    # overdrawn by the second job's pair (``ratelimit``); the rest wait for the budget.
    assert spent == {"jobs.list": 1, "jobs.events": 2, "jobs.checkpoints": 2}
    assert len(batches) == 1
    waiting = [j for j in made if (repo.poll_due_at(store, j) or 0) > clock.now()]
    assert len(waiting) == len(made)  # every job rescheduled, none dropped
    # As time passes, the budget refills and every job is synced.
    for _ in range(10):
        clock.advance(1.0)
        for batch in poll.claim_due_batches(ctx):
            poll.run_polls(ctx, batch, lambda task, job_id: None)
    synced = [record.load(store, j) for j in made]
    assert all(j is not None and j.provider_status == "running" for j in synced)


def test_a_provider_that_does_not_list_is_polled_job_by_job(settings, store, clock):
    provider = FakeProvider()
    backends: dict[str, Backend] = {"fake": FakeRemoteBackend("fake", provider)}
    registry.register("fake", lambda s, st, d: backends["fake"])
    try:
        ctx = stage_context(settings, store, backends, clock)
        made = []
        for _ in range(3):
            job_id = new_job(settings, store, backends, "fake")
            task: str | None = tasknames.JOB_PREPARE
            while task:
                task = run_task(ctx, task, job_id)
            made.append(job_id)
        for pj in provider.jobs.values():
            pj.status = "succeeded"
        poll_round(ctx, clock)
        assert provider.calls["sync"] == 3
        for job_id in made:
            job = record.load(store, job_id)
            assert job is not None and job.stage == "finalizing"
    finally:
        registry.unregister("fake")


def test_one_jobs_error_in_a_batch_leaves_the_others_synced_and_every_lock_released(
    settings, store, sandbox_url, clock, monkeypatch
):
    """A batch's results are written on several threads: an error writing one job's (injected
    here) is raised after the others were written and handed on, and no poll lock stays held."""
    from service.core.store import keys

    backends = sandbox_backends(settings, store, sandbox_url)
    ctx = stage_context(dataclasses.replace(settings, poll_rate_per_s=0), store, backends, clock)
    job_ids = submitted_jobs(ctx, backends, 3, sandbox={**STAY_RUNNING, "steps": 1, "step_s": 0})
    broken = job_ids[1]
    synced = poll._synced

    def failing(ctx_, job, progress):  # type: ignore[no-untyped-def]
        if job.id == broken:
            raise RuntimeError("injected")
        return synced(ctx_, job, progress)

    monkeypatch.setattr(poll, "_synced", failing)
    handed_on: list[tuple[str, str]] = []
    clock.advance(settings.poll_interval_s)
    [batch] = poll.claim_due_batches(ctx)
    with pytest.raises(RuntimeError, match="injected"):
        poll.run_polls(ctx, batch, lambda task, job_id: handed_on.append((task, job_id)))
    others = [j for j in job_ids if j != broken]
    assert sorted(handed_on) == sorted((tasknames.JOB_FINALIZE, j) for j in others)
    for job_id in job_ids:
        assert store.r.get(keys.job_lock(job_id)) is None
    assert record.load(store, broken).stage == "provider_validating"  # type: ignore[union-attr]
