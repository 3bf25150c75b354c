"""The ray executor (DESIGN §13, docs/ray.md): a local job's run submitted to a Ray cluster
through its Jobs API, followed until it ends, and stopped.

The train task that claimed the job (``local_run``) holds the job's lease while it follows the
run, but the run is a Ray job: it does not depend on the task. Its submission id is the job and
its attempt (``ray_jobs.submission_id``), kept on the job with how far its log has been relayed,
so a follower that dies leaves the run training, and the next one (beat re-queues the job when
the lease expires) re-attaches to the same submission and reads on from there: one Ray job per
attempt, however many Tuneline workers follow it. An attempt ends with its run, or with a pause,
which stops the Ray job; the next attempt (after the resume) is a new submission of the same Ray
Train run, which resumes from the run's newest checkpoint. Cancel stops the Ray job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.backends.base import Trained
from service.core.backends.local import Compute, compute_of, local_state
from service.core.backends.local_run import (
    PROGRESS_EVENTS,
    STAGES,
    Relay,
    TrainingContext,
    build_spec,
    child_env,
    finished_run,
    job_dir,
    write_spec,
)
from service.core.jobs import lifecycle, record, states
from service.core.jobs.integrations import WANDB
from service.core.jobs.record import Job
from service.core.ray_jobs import (
    CANCELLED,
    QUEUED,
    RAY_UNREACHABLE,
    SUCCEEDED,
    TERMINAL_RAY,
    TRAINING_FAILED,
    Progress,
    RayCompute,
    RayJobs,
    RayJobsError,
    RayRun,
    entrypoint,
    submission_id,
)
from service.core.store import Store
from service.core.store import jobs as repo
from service.core.store import training as leases
from service.settings import Settings

log = logging.getLogger("tuneline.ray")

CHECK_EVERY_S = 1.0  # how often the follower looks for a cancel or a pause (the job's status)
POLL_EVERY_S = 2.0  # how often it reads the Ray job (its status, then its log)
# How long the cluster may not answer while a run is followed before the job fails: a restart of
# the head or a network blip passes; a cluster that is gone does not hold the job forever.
LOST_AFTER_S = 300.0
STOP_WAIT_S = 60.0  # after a stop, how long the run's last lines are waited for
RAY_JOB_STOPPED = "ray_job_stopped"
WANDB_KEY = "WANDB_API_KEY"  # the one secret a run may need (child_env says when)


@dataclass
class RayAttempt:
    """The job's current attempt on Ray, stored in its ``LocalState.ray``."""

    attempt: int = 0
    submission_id: str | None = None  # set once submitted
    offset: int = 0  # characters of the Ray job's log already relayed
    started: bool = False  # the run said ``started``: its workers train
    total_steps: int | None = None
    finished: dict[str, Any] | None = None  # the run's ``finished`` message, once relayed
    error: dict[str, str] | None = None  # the run's ``error`` message, once relayed

    @classmethod
    def of(cls, job: Job) -> RayAttempt:
        raw = local_state(job).ray or {}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def put(self, job: Job) -> None:
        local_state(job).ray = dataclasses.asdict(self)


def ray_spec(settings: Settings, job: Job, compute: Compute) -> dict[str, Any]:
    """The process executor's SPEC.json for a run on the cluster: absolute paths (the Ray job does
    not start in this worker's directory) and the workers' device."""
    spec = build_spec(settings, job, resume=False)  # Ray Train restores the run's checkpoint itself
    for name in ("train_file", "validation_file"):
        if spec[name]:
            spec[name] = str(Path(spec[name]).resolve())
    spec["device"] = "cuda" if compute.gpus_per_worker > 0 else "cpu"
    wandb = spec["integrations"].get(WANDB)
    if wandb is not None and WANDB_KEY in child_env(settings, job):
        wandb["api_key_file"] = str(key_file(settings, job.id).resolve())
    return spec


def key_file(settings: Settings, job_id: str) -> Path:
    """Where a run on Ray reads the W&B key (DESIGN §8, docs/ray.md "Secrets"): a file on the data
    directory the nodes share, readable by its owner only, there while an attempt runs. Not the
    Ray job's ``runtime_env``, which the dashboard and the Jobs API show to whoever reaches them."""
    return job_dir(settings, job_id) / "secrets" / "wandb-api-key"


def _write_key(settings: Settings, job: Job) -> None:
    key = child_env(settings, job).get(WANDB_KEY)
    if key is None:
        return
    path = key_file(settings, job.id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)
    os.replace(tmp, path)


def forget_key(settings: Settings, job_id: str) -> None:
    """The attempt ended (or was stopped): its key file goes; the next attempt writes it again."""
    key_file(settings, job_id).unlink(missing_ok=True)


def _env(settings: Settings) -> dict[str, str]:
    """The Ray job's environment beyond the cluster's own (its nodes are configured by the operator)."""
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if settings.train_threads:
        env["OMP_NUM_THREADS"] = str(settings.train_threads)
    return env


def run(ctx: TrainingContext, job_id: str, token: str) -> Trained | None:
    """Submit the job's current attempt (or re-attach to it) and follow it to its end."""
    job = record.load(ctx.store, job_id)
    if job is None or job.status in states.TERMINAL or job.stage not in STAGES:
        return None
    attempt = RayAttempt.of(job)
    try:
        jobs = RayJobs(ctx.settings.ray_address)
        if attempt.submission_id is None:
            attempt = _submit(ctx, job, jobs, attempt)
    except RayJobsError as exc:
        if attempt.submission_id is None:  # nothing runs: the job cannot start
            return Trained("training failed", error={"code": exc.code, "message": exc.message})
        # A run is out there: leave the lease to expire, and the next worker tries again.
        raise
    if attempt.offset or attempt.started:
        lifecycle.record_event(
            ctx.store,
            job_id,
            f"Following Ray job {attempt.submission_id} from a new worker; it went on training meanwhile",
            data={"ray_submission_id": attempt.submission_id},
        )
    return _Follower(ctx, job, jobs, attempt, token).follow()


def _submit(ctx: TrainingContext, job: Job, jobs: RayJobs, attempt: RayAttempt) -> RayAttempt:
    settings = ctx.settings
    compute = compute_of(job)
    sid = submission_id(job.id, attempt.attempt)
    spec_path = write_spec(settings, ray_spec(settings, job, compute)).resolve()
    _write_key(settings, job)
    command = entrypoint(
        str(spec_path),
        RayCompute(
            num_workers=compute.num_workers,
            gpus_per_worker=compute.gpus_per_worker,
            storage=settings.ray_storage_path,
            # The cluster runs the trainer image: the same interpreter path as this worker's.
            python=settings.train_python or sys.executable,
        ),
    )
    metadata = {
        "tuneline_job_id": job.id,
        "tuneline_attempt": str(attempt.attempt),
        "tuneline_tenant": job.tenant,
    }
    ray_job, created = jobs.submit(sid, command, env=_env(settings), metadata=metadata)
    submitted = RayAttempt(attempt=attempt.attempt, submission_id=sid)
    how = "Submitted to" if created else "Re-attached to the run already submitted to"
    gpus = f", {compute.gpus_per_worker:g} GPU each" if compute.gpus_per_worker else ""
    lifecycle.record_event(
        ctx.store,
        job.id,
        f"{how} the Ray cluster at {jobs.address}: Ray job {sid} ({compute.num_workers} workers{gpus})",
        data={
            "ray_submission_id": sid,
            "ray_status": ray_job.ray_status,
            "attempt": attempt.attempt,
            "num_workers": compute.num_workers,
            "gpus_per_worker": compute.gpus_per_worker,
        },
        apply=submitted.put,
    )
    log.info("ray job submitted", extra={"job_id": job.id, "submission_id": sid, "new_submission": created})
    return submitted


class _Follower:
    """Relays one Ray job's progress to the Tuneline job until the run ends, the job is cancelled
    or paused, or the lease is lost (then another worker follows it)."""

    def __init__(
        self, ctx: TrainingContext, job: Job, jobs: RayJobs, attempt: RayAttempt, token: str
    ) -> None:
        assert attempt.submission_id is not None
        self.ctx, self.job, self.jobs, self.attempt, self.token = ctx, job, jobs, attempt, token
        self.sid: str = attempt.submission_id
        total = attempt.total_steps
        self.relay = Relay(
            ctx, job, total_steps=total, progress_every=max(1, (total or PROGRESS_EVENTS) // PROGRESS_EVENTS)
        )
        self.relay.finished, self.relay.error = attempt.finished, attempt.error
        self.run = RayRun(
            jobs,
            self.sid,
            offset=attempt.offset,
            started=attempt.started,
            finished=attempt.finished,
            error=attempt.error,
        )
        self.waiting = ""  # the queued reason last announced
        self.lost_since: float | None = None  # since when the cluster has not answered
        self.last_error: RayJobsError | None = None

    def follow(self) -> Trained | None:
        ctx, job_id = self.ctx, self.job.id
        ttl = float(ctx.settings.train_lease_s)
        beat_every = max(ttl / 4.0, 0.5)
        next_check = next_beat = next_poll = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_check:
                next_check = now + CHECK_EVERY_S
                current = record.load(ctx.store, job_id)
                if current is None or current.status in states.TERMINAL:
                    self._stop("the job ended")
                    forget_key(ctx.settings, job_id)
                    return None
                if current.status == states.PAUSED:
                    return self._pause()
            if now >= next_beat:
                next_beat = now + beat_every
                if not leases.refresh_lease(ctx.store, job_id, self.token, ttl, time.time()):
                    # Another worker holds the job now: the run goes on, and it follows it.
                    log.warning("lease lost; the Ray job is left running", extra={"job_id": job_id})
                    return None
            if now >= next_poll:
                next_poll = now + POLL_EVERY_S
                progress = self._poll()
                if progress is not None and progress.ray_status in TERMINAL_RAY:
                    return self._ended(progress)
                if self.lost_since is not None and now - self.lost_since >= LOST_AFTER_S:
                    self._stop("the cluster stopped answering")
                    forget_key(ctx.settings, job_id)
                    return Trained("training failed", error=self._lost_error())
            time.sleep(0.25)

    # --- one look at the run -------------------------------------------------------------------

    def _poll(self) -> Progress | None:
        """Read the Ray job once and relay what it said (None: the cluster did not answer)."""
        try:
            progress = self.run.poll()
        except RayJobsError as exc:
            if self.lost_since is None:
                self.lost_since = time.monotonic()
                lifecycle.record_event(
                    self.ctx.store,
                    self.job.id,
                    f"Lost contact with Ray job {self.sid}; retrying for up to {LOST_AFTER_S:g} s: "
                    f"{exc.message}",
                    level="warn",
                )
            self.last_error = exc
            return None
        if self.lost_since is not None:
            self.lost_since = None
            lifecycle.record_event(self.ctx.store, self.job.id, f"Ray job {self.sid} answers again")
        for message in progress.messages:
            if message["type"] == "started":
                self._running()
            self.relay.handle(message)
        if progress.messages:
            self._save()
        if progress.status == QUEUED and progress.reason != self.waiting:
            self.waiting = progress.reason
            lifecycle.record_event(
                self.ctx.store,
                self.job.id,
                f"Queued on the Ray cluster: {progress.reason}",
                data={"ray_submission_id": self.sid, "ray_status": progress.ray_status},
            )
        return progress

    def _running(self) -> None:
        """The run's workers train: the job is running (a no-op when it already was)."""
        again = f" (attempt {self.attempt.attempt + 1})" if self.attempt.attempt else ""
        lifecycle.try_transition(
            self.ctx.store,
            self.job.id,
            states.RUNNING,
            "training",
            f"Training started on Ray job {self.sid}{again}",
            data={"ray_submission_id": self.sid},
        )

    def _save(self) -> None:
        """Keep how far the log was relayed, so that the next follower reads on from there."""
        run, relay = self.run, self.relay
        now = dataclasses.replace(
            self.attempt,
            offset=run.offset,
            started=run.started,
            total_steps=relay.total_steps,
            finished=run.finished,
            error=run.error,
        )
        self.attempt = now
        record.modify(self.ctx.store, self.job.id, now.put)

    # --- the end of a run ----------------------------------------------------------------------

    def _ended(self, progress: Progress) -> Trained | None:
        forget_key(self.ctx.settings, self.job.id)
        current = record.load(self.ctx.store, self.job.id)
        if current is None or current.status in states.TERMINAL:
            return None
        if progress.status == SUCCEEDED and self.run.finished is not None:
            return finished_run(self.ctx, self.relay, self.run.finished)
        if progress.status == CANCELLED:
            if current.status == states.PAUSED:
                self._settle_pause()
                return None
            return Trained(
                "training failed",
                error={
                    "code": RAY_JOB_STOPPED,
                    "message": f"the Ray job {self.sid} was stopped outside Tuneline (ray job stop, "
                    "or the Ray dashboard)",
                },
            )
        error = progress.error or {"code": TRAINING_FAILED, "message": progress.reason}
        return Trained("training failed", error=dict(error))

    def _lost_error(self) -> dict[str, str]:
        cause = f": {self.last_error.message}" if self.last_error is not None else ""
        return {
            "code": RAY_UNREACHABLE,
            "message": f"lost contact with Ray job {self.sid} at {self.jobs.address} for "
            f"{LOST_AFTER_S:g} s{cause}"[:2000],
        }

    def _stop(self, why: str) -> None:
        try:
            stopped = self.jobs.stop(self.sid)
        except RayJobsError as exc:
            log.warning("could not stop the Ray job", extra={"job_id": self.job.id, "error": exc.message})
            return
        if stopped:
            lifecycle.record_event(self.ctx.store, self.job.id, f"Stopped Ray job {self.sid}: {why}")

    def _pause(self) -> Trained | None:
        """Stop the Ray job and wait for it to end (relaying its last lines); the job is then paused."""
        self._stop("the job was paused")
        deadline = time.monotonic() + STOP_WAIT_S
        progress: Progress | None = None
        while time.monotonic() < deadline:
            progress = self._poll()
            if progress is not None and progress.ray_status in TERMINAL_RAY:
                break
            time.sleep(0.5)
        forget_key(self.ctx.settings, self.job.id)
        if progress is not None and progress.status == SUCCEEDED and self.run.finished is not None:
            # The run finished before the stop landed: it goes on to finalizing, as a child would.
            return finished_run(self.ctx, self.relay, self.run.finished)
        self._settle_pause()
        return None

    def _settle_pause(self) -> None:
        """The job is paused; the next attempt is a new Ray job that resumes the Ray Train run.

        From the newest checkpoint Ray Train registered: the newest one the run reported, unless
        the stop came between its upload and its registration (then the one before).
        """
        steps = [int(c["step_number"]) for c in repo.list_checkpoints(self.ctx.store, self.job.id)]
        step = max(steps, default=0)
        following = RayAttempt(attempt=self.attempt.attempt + 1)

        def paused(job: Job) -> None:
            local_state(job).paused_step = step
            following.put(job)

        lifecycle.try_transition(
            self.ctx.store,
            self.job.id,
            *states.PAUSED_STATE,
            f"Training paused: Ray job {self.sid} stopped; the next attempt resumes from the newest "
            f"checkpoint Ray Train registered (the newest reported: step {step})",
            apply=paused,
            data={"step": step, "ray_submission_id": self.sid},
        )


def stop_run(settings: Settings, store: Store, job: Job) -> None:
    """Stop the job's Ray job, if it has one (cancel); a cluster that cannot be reached is logged."""
    sid = RayAttempt.of(job).submission_id
    forget_key(settings, job.id)
    if sid is None:
        return
    try:
        stopped = RayJobs(settings.ray_address).stop(sid)
    except RayJobsError as exc:
        log.warning("could not stop the Ray job", extra={"job_id": job.id, "error": exc.message})
        return
    if stopped:
        lifecycle.record_event(store, job.id, f"Stopped Ray job {sid}: the job was cancelled")
