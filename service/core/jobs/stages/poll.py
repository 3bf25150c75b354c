"""The poll schedule: sync a provider-run job's progress, and the pipeline's watchdog.

Every job not yet ended has an entry in the poll schedule. For a job in a worker-driven stage the
entry is the watchdog: a stage left longer than ``WATCHDOG_S`` (its task lost, e.g. to a broker
outage between the transition and the enqueue) gets its task enqueued again; every stage task is
safe to run twice. For a job its provider runs, the entry is the next sync.

Due jobs are polled in batches (``run_polls``): the jobs of one backend are synced together
(``Backend.sync_many``: one account-wide list for many jobs, events and checkpoints only for the
jobs that changed or whose details are stale); a job the batch did not cover gets its own sync,
so none is stranded. Every provider call takes a token of the account's rate budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from service.core import ids, tasknames
from service.core.backends.base import Backend, BackendError, Budget, Progress, RemoteJob, WantsDetail
from service.core.backends.remote import remote_state
from service.core.jobs import lifecycle, metrics, record, retry, states
from service.core.jobs.record import Job
from service.core.jobs.stages.common import STAGE_TASKS, WATCHDOG_S, StageContext, fail_job
from service.core.store import jobs as repo
from service.core.store import ratelimit

POLL_LEASE_S = 30.0
MAX_POLL_INTERVAL_S = 60.0
EVENTS_KEPT = 500
POLL_BATCH = 100  # due jobs one poll task takes (an account list answers 100 a page)
MIN_POLL_GAP = 0.5  # a late poll's next sync: at least this part of an interval after it
SETTLE_THREADS = 8  # jobs of a batch whose sync results are written at the same time

PROVIDER_STATES = {
    "validating_files": (states.VALIDATING, "provider_validating"),
    "queued": (states.QUEUED, "provider_queued"),
    "running": (states.RUNNING, "training"),
    "paused": states.PROVIDER_PAUSED_STATE,
}


def claim_due(ctx: StageContext, limit: int = 200) -> list[str]:
    return repo.claim_due_polls(ctx.store, ctx.clock.now(), POLL_LEASE_S, limit)


def claim_due_batches(ctx: StageContext, limit: int = 1000) -> list[list[str]]:
    """Due jobs in batches of ``POLL_BATCH``, each one poll task (``run_polls``)."""
    due = claim_due(ctx, limit)
    return [due[i : i + POLL_BATCH] for i in range(0, len(due), POLL_BATCH)]


def run_poll(ctx: StageContext, job_id: str) -> str | None:
    """Sync the job from its provider, or act as its watchdog; the task to enqueue, if any."""
    job = _pollable(ctx, job_id)
    if job is None or isinstance(job, str):
        return job
    token = _lock(ctx, job)
    if token is None:
        return None
    try:
        return _poll_locked(ctx, job)
    finally:
        repo.release_lock(ctx.store, job_id, token)


def run_polls(ctx: StageContext, job_ids: list[str], then: Callable[[str, str], None]) -> None:
    """Poll due jobs: those of one backend synced together, the rest each on its own.

    ``then(task, job_id)`` enqueues a job's next task as soon as its poll hands one on (a
    finalize does not wait for the rest of the batch).
    """
    groups: dict[str, list[Job]] = defaultdict(list)
    for job_id in job_ids:
        job = _pollable(ctx, job_id)
        if isinstance(job, str):
            then(job, job_id)
        elif job is not None:
            groups[job.provider].append(job)
    for jobs in groups.values():
        _sync_together(ctx, ctx.backend(jobs[0]), jobs, then)


def _pollable(ctx: StageContext, job_id: str) -> Job | str | None:
    """The job when its provider should be asked; else the watchdog's work done here (a task
    name to enqueue, or None)."""
    job = record.load(ctx.store, job_id)
    if job is None or job.status in states.TERMINAL:
        repo.unschedule_poll(ctx.store, job_id)
        return None
    if job.stage in STAGE_TASKS:
        now = ctx.clock.now()
        repo.schedule_poll(ctx.store, job_id, now + WATCHDOG_S)
        stalled = now - float(job.stage_changed_at or now) >= WATCHDOG_S
        return STAGE_TASKS[job.stage] if stalled and ctx.backend(job).wake(job) else None
    backend = ctx.backend(job)
    if job.stage == backend.after_prepare().stage:
        # Waiting for its executor, which holds it from here (start is idempotent); a record from
        # before the executor had a queue of its own joins it now.
        repo.unschedule_poll(ctx.store, job_id)
        return backend.start(job)
    if not job.provider_job_id:
        # A stage its executor drives (training under a lease): the lease reaper watches it.
        repo.unschedule_poll(ctx.store, job_id)
        return None
    return job


def _lock(ctx: StageContext, job: Job) -> str | None:
    """Take the job's poll lock (its token); None, and the job looked at again soon, when
    another poll holds it (or a killed one did)."""
    token = secrets.token_hex(8)
    if repo.acquire_lock(ctx.store, job.id, ctx.settings.poll_lock_s, token):
        return token
    repo.schedule_poll(ctx.store, job.id, ctx.clock.now() + ctx.settings.poll_interval_s)
    return None


def _sync_together(
    ctx: StageContext, backend: Backend, jobs: list[Job], then: Callable[[str, str], None]
) -> None:
    """One ``sync_many`` for jobs of one backend, under their locks; each next task to ``then``.

    Each job's result is then written by one of ``SETTLE_THREADS`` threads: a job's writes are a
    few Redis round trips that wait far more than they compute, and touch only that job's keys.
    ``then`` runs on this thread, as each job is done; one job's error is raised after the rest.
    """
    tokens = {job.id: token for job in jobs if (token := _lock(ctx, job))}
    held = [job for job in jobs if job.id in tokens]

    def settle(job: Job) -> str | None:
        try:
            result = found.get(job.id)
            if result is None:
                return _poll_locked(ctx, job)  # not covered: its own sync
            if isinstance(result, BackendError):
                _poll_failed(ctx, job, result)
                return None
            return _synced(ctx, job, result)
        finally:
            repo.release_lock(ctx.store, job.id, tokens.pop(job.id))

    errors: list[Exception] = []
    try:
        found = backend.sync_many(held, _budget(ctx, backend), _wants_detail(ctx)) if held else {}
        with ThreadPoolExecutor(min(SETTLE_THREADS, len(held) or 1), "tuneline-poll") as pool:
            settling = {pool.submit(settle, job): job.id for job in held}
            for done in as_completed(settling):
                try:
                    task = done.result()
                except Exception as exc:  # raised below, after the other jobs
                    errors.append(exc)
                    continue
                if task:
                    then(task, settling[done])
    finally:
        for job_id, token in list(tokens.items()):
            repo.release_lock(ctx.store, job_id, token)
    if errors:
        raise errors[0]


def _budget(ctx: StageContext, backend: Backend) -> Budget:
    """The account's rate budget, taken per provider call (``ratelimit``)."""
    settings = ctx.settings

    def take(calls: int) -> bool:
        now = ctx.clock.now()
        rate, burst = settings.poll_rate_per_s, settings.poll_burst
        return ratelimit.take(ctx.store, backend.account, rate, burst, now, calls) == 0

    return take


def _wants_detail(ctx: StageContext) -> WantsDetail:
    """Read a listed job's events and checkpoints when its status changed, or while it runs
    (they grow; the list cannot say) once every ``poll_detail_interval_s``."""
    now = ctx.clock.now()

    def wants(job: Job, remote: RemoteJob) -> bool:
        if remote.status != job.provider_status:
            return True
        detailed_at = remote_state(job).detailed_at
        stale = detailed_at is None or now - detailed_at >= ctx.settings.poll_detail_interval_s
        return remote.status == "running" and stale

    return wants


def _poll_locked(ctx: StageContext, job: Job) -> str | None:
    backend = ctx.backend(job)
    now = ctx.clock.now()
    settings = ctx.settings
    wait = ratelimit.take(
        ctx.store, backend.account, settings.poll_rate_per_s, settings.poll_burst, now, backend.sync_calls
    )
    if wait > 0:
        # Over the account's poll budget: come back when a token frees, spread out so the jobs
        # that were refused together do not all return in the same instant.
        repo.schedule_poll(ctx.store, job.id, now + wait + ctx.jitter() * max(wait, 0.5))
        return None
    try:
        progress = backend.sync(job)
    except BackendError as exc:
        _poll_failed(ctx, job, exc)
        return None
    return _synced(ctx, job, progress)


def _poll_failed(ctx: StageContext, job: Job, exc: BackendError) -> None:
    failures = remote_state(job).poll_failures

    def failed(j: Job) -> None:
        remote_state(j).poll_failures = failures + 1

    record.modify(ctx.store, job.id, failed)
    # The poll's own interval is the base of its backoff.
    policy = dataclasses.replace(retry.POLL, base_s=ctx.settings.poll_interval_s)
    decision = retry.decide(policy, exc, failures, ctx.jitter())
    if not decision.retry:
        fail_job(ctx.store, job.id, decision.code, decision.message)
        return
    repo.schedule_poll(ctx.store, job.id, ctx.clock.now() + decision.delay)


def _synced(ctx: StageContext, job: Job, progress: Progress) -> str | None:
    _record_progress(ctx, job, progress)
    return _follow(ctx, job, progress)


def _follow(ctx: StageContext, job: Job, progress: Progress) -> str | None:
    remote = progress.job
    job_id = job.id
    base = ctx.settings.poll_interval_s
    polled_at = ctx.clock.now()

    def synced(j: Job) -> None:
        state = remote_state(j)
        j.provider_status = remote.status
        state.poll_failures, state.last_polled_at = 0, polled_at
        if progress.detailed:
            state.detailed_at = polled_at
        if remote.estimated_finish:
            j.estimated_finish = remote.estimated_finish

    if remote.status in PROVIDER_STATES:
        status, stage = PROVIDER_STATES[remote.status]
        moving = (job.status, job.stage) != (status, stage)
        # Poll a little less often while nothing changes, never slower than the cap.
        quiet_for = 0.0 if moving else polled_at - float(job.stage_changed_at or polled_at)
        interval = min(base * (1 + quiet_for // 300), MAX_POLL_INTERVAL_S)
        due = next_poll_at(remote_state(job).poll_due_at, polled_at, interval)

        def synced_until(j: Job) -> None:
            synced(j)
            remote_state(j).poll_due_at = due

        if moving:
            message = f"Provider status: {remote.status}"
            moved = lifecycle.try_transition(ctx.store, job_id, status, stage, message, apply=synced_until)
            if moved is None:
                return None
        else:
            record.modify(ctx.store, job_id, synced_until)
        repo.schedule_poll(ctx.store, job_id, due)
        return None
    if remote.status == "succeeded":

        def trained(j: Job) -> None:
            synced(j)
            state = remote_state(j)
            state.fine_tuned_model, state.result_files = remote.fine_tuned_model, remote.result_files
            j.trained_tokens = remote.trained_tokens

        message = "Provider finished training; finalizing"
        if (
            lifecycle.try_transition(ctx.store, job_id, states.RUNNING, "finalizing", message, apply=trained)
            is None
        ):
            return None
        repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + WATCHDOG_S)  # watchdog for finalize
        return tasknames.JOB_FINALIZE
    if remote.status == "failed":
        error = remote.error or {"code": "provider_failed", "message": "the provider reported failure"}

        def failed(j: Job) -> None:
            synced(j)
            j.error = {
                "code": error.get("code") or "provider_failed",
                "message": error.get("message"),
                "param": error.get("param"),
            }

        lifecycle.try_transition(
            ctx.store,
            job_id,
            states.FAILED,
            "done",
            f"Job failed at the provider: {error.get('message')}",
            level="error",
            apply=failed,
        )
        return None
    if remote.status == "cancelled":
        message = "Job was cancelled at the provider"
        lifecycle.try_transition(ctx.store, job_id, states.CANCELLED, "done", message, apply=synced)
        return None
    repo.schedule_poll(ctx.store, job_id, ctx.clock.now() + base)
    return None


def next_poll_at(last_due: float | None, now: float, interval: float) -> float:
    """When a job synced at ``now`` is next due: ``interval`` after its last sync was due.

    Timed from the due time, not from the sync, the time a poll waits for its turn (the scan, the
    queue, the account's list) is not added to every interval: at a thousand jobs it was a third
    of one. A poll that ran later than half an interval is next due half an interval from now,
    so polls that fell behind do not bunch up; never later than an interval from now.
    """
    if last_due is None:
        return now + interval
    return min(max(last_due + interval, now + interval * MIN_POLL_GAP), now + interval)


def _record_progress(ctx: StageContext, job: Job, progress: Progress) -> None:
    """New provider events (metrics rows among them) and checkpoints, each recorded once."""
    seen = set(remote_state(job).events_seen)
    fresh = [e for e in reversed(progress.events) if e.id not in seen]
    rows = []
    for event in fresh:
        if event.type == "metrics" and event.data.get("step") is not None:
            rows.append(metrics.row(event.data))
        lifecycle.record_event(
            ctx.store, job.id, event.message, level=event.level, type_=event.type, data=event.data
        )
        seen.add(event.id)
    if rows:
        repo.put_metrics(ctx.store, job.id, rows)
    if fresh:
        # Keep the set bounded: provider lists are newest first, so old ids never come back.
        kept = sorted(seen)[-EVENTS_KEPT:]

        def remember(j: Job) -> None:
            remote_state(j).events_seen = kept

        record.modify(ctx.store, job.id, remember)
    for cp in progress.checkpoints:
        checkpoint = {
            "id": ids.PREFIXES["checkpoint"] + hashlib.sha256(cp.id.encode()).hexdigest()[:24],
            "object": "fine_tuning.job.checkpoint",
            "created_at": cp.created_at,
            "fine_tuned_model_checkpoint": cp.fine_tuned_model_checkpoint,
            "fine_tuning_job_id": job.id,
            "step_number": cp.step_number,
            "metrics": {"step": cp.step_number, **cp.metrics},
        }
        lifecycle.record_checkpoint(ctx.store, job.id, checkpoint)
