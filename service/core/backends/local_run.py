"""Local training runs (DESIGN §5, §6): the wait queue's trainer, lease, child process, reaping.

A train message only wakes a trainer: it takes this worker's device, then claims jobs from the
train wait queue (``store.train_queue``) one after another until none is eligible. A train task
acknowledges early (training outlives any visibility timeout), so the job is held by a lease in
Tuneline's own keys that a heartbeat refreshes while the child runs. When the worker dies the
lease expires; beat's reaper puts the job back in front of the queue and wakes a trainer, and the
next run resumes from the last checkpoint. A job whose runs keep dying fails after
``train_max_restarts`` restarts. While jobs wait, beat sends a wake-up at most every
``WAKE_EVERY_S``, so a lost or deleted broker message delays a job, never strands it.

A claimed job runs on its ``compute.executor`` (``EXECUTORS``): ``process``, the child on this
host's device (below), or ``ray``, a Ray job that ``ray_executor`` submits and follows under the
same lease while the device is free for other runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core import ids
from service.core.backends.base import Trained
from service.core.backends.local import (
    PROCESS,
    RAY,
    REINFORCEMENT,
    LocalState,
    base_model_of,
    compute_of,
    device_id,
    local_state,
    method_type,
    python_grader_limits,
)
from service.core.jobs import lifecycle, metrics, record, retry, states
from service.core.jobs.integrations import MLFLOW, WANDB
from service.core.jobs.naming import fine_tuned_model_name
from service.core.jobs.record import Job
from service.core.jobs.stages.common import fail_job
from service.core.jobs.supervisor import Child
from service.core.store import Store, train_queue
from service.core.store import jobs as repo
from service.core.store import training as leases
from service.settings import Settings

log = logging.getLogger("tuneline.local")

STAGES = ("train_queued", "training")
CHECK_EVERY_S = 1.0  # how often the supervisor looks for a cancel (the job's status)
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long
EXIT_WAIT_S = 30.0  # after stdout closes, how long the child may take to exit
PROGRESS_EVENTS = 20  # about this many "Step s/N" events per run, plus the first and last step
# Hyperparameters the training child understands (CONTRACTS.md); the rest stay on the job.
SPEC_KNOBS = (
    "n_epochs",
    "batch_size",
    "learning_rate",
    "learning_rate_multiplier",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "max_seq_length",
    "checkpoint_every",
    "seed",
    "max_steps",
    "beta",
    "compute_multiplier",
    "eval_interval",
    "eval_samples",
    "max_completion_length",
)
RESTARTS_STAGE = "train_restarts"  # the delivery counter of restarts (service.core.jobs.retry)
# While jobs wait, beat sends a trainer a wake-up at most this often: a lost message costs this long.
WAKE_EVERY_S = 30.0


@dataclass
class TrainingContext:
    settings: Settings
    store: Store
    device_id: str  # names the device this worker trains on, e.g. ``<host>:cuda:0``


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "jobs" / job_id


def output_dir(settings: Settings, job_id: str) -> Path:
    return job_dir(settings, job_id) / "output"


def model_cache_dir(settings: Settings) -> Path:
    """Where the engine keeps converted base models (a GGUF dequantized once, not per job)."""
    return settings.data_dir / "model-cache"


def _device(settings: Settings) -> tuple[str, dict[str, str]]:
    """The spec's device and the child's extra environment (``cuda:N`` pins one GPU)."""
    if settings.train_device.startswith("cuda:"):
        return "cuda", {"CUDA_VISIBLE_DEVICES": settings.train_device.split(":", 1)[1]}
    return settings.train_device, {}


def build_spec(settings: Settings, job: Job, resume: bool) -> dict[str, Any]:
    """SPEC.json for ``python -m service.training.run`` (CONTRACTS.md)."""
    hyper = {k: v for k, v in job.hyperparameters.items() if k in SPEC_KNOBS and v != "auto"}
    if job.seed is not None:
        hyper.setdefault("seed", job.seed)
    prepared = job.prepared or {}
    device, _ = _device(settings)
    state = local_state(job)
    method = method_type(job.method)
    reward: dict[str, Any] = {}
    if method == REINFORCEMENT:
        reward = {
            "grader": ((job.method or {}).get(REINFORCEMENT) or {}).get("grader"),
            "python_grader": python_grader_limits(settings),
        }
    return {
        "job_id": job.id,
        "base_model": base_model_of(job),
        "method": method,
        **reward,
        "training_type": "full" if job.hyperparameters.get("training_type") == "full" else "lora",
        "from_model": state.from_model,
        "train_file": prepared["train"],
        "validation_file": prepared.get("validation"),
        "output_dir": str(output_dir(settings, job.id).resolve()),
        "resume": resume,
        "hyperparameters": hyper,
        "device": device,
        "threads": settings.train_threads or None,
        "cache_dir": str(model_cache_dir(settings).resolve()),
        "integrations": _integrations(settings, job),
    }


def _integrations(settings: Settings, job: Job) -> dict[str, Any]:
    """The trackers the run reports to (``service.training.tracking``), each with where its runs
    go. Never a key: a W&B key reaches the child only through its environment (``child_env``), a
    run on Ray through a file only its user reads (``ray_executor.key_file``)."""
    out: dict[str, Any] = {}
    for item in job.integrations:
        kind = item.get("type")
        given = {k: v for k, v in (item.get(kind) or {}).items() if v is not None}
        if kind == WANDB:
            mode = "online" if settings.wandb_api_key else "offline"
            out[WANDB] = {**given, "mode": mode, "base_url": settings.wandb_base_url or None}
        elif kind == MLFLOW:
            own_store = not settings.mlflow_tracking_uri
            artifacts = settings.data_dir / "mlflow" / "artifacts"
            out[MLFLOW] = {
                **given,
                "tracking_uri": settings.effective_mlflow_tracking_uri,
                "artifact_location": str(artifacts.resolve()) if own_store else None,
            }
    if out:
        out["tags"] = {"tuneline.job_id": job.id, "tuneline.tenant": job.tenant, "tuneline.model": job.model}
    return out


def child_env(settings: Settings, job: Job) -> dict[str, str]:
    """The training child's environment beyond the device's: the W&B key when the job logs to W&B."""
    wandb = any(item.get("type") == WANDB for item in job.integrations)
    return {"WANDB_API_KEY": settings.wandb_api_key} if wandb and settings.wandb_api_key else {}


def write_spec(settings: Settings, spec: dict[str, Any]) -> Path:
    path = job_dir(settings, spec["job_id"]) / "SPEC.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


# --- one run ----------------------------------------------------------------------------------


Conclude = Callable[[str, Trained], None]


class LocalRunner:
    """This worker's trainer: claims queued local jobs and runs each under a lease on its device."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.ctx = TrainingContext(settings, store, device_id(settings))

    def serve(self, conclude: Conclude) -> list[str]:
        """One wake-up: train the queue's next jobs until none is eligible; the ids claimed.

        ``conclude`` records how a run ended (the train stage's transition and hand-off) before
        the job gives its tenant's slot back. A device another run holds ends the wake-up at once:
        its jobs stay queued, and the run holding the device claims them when it finishes.
        """
        ctx = self.ctx
        ttl = float(ctx.settings.train_lease_s)
        token = secrets.token_hex(12)
        if not leases.acquire_device(ctx.store, ctx.device_id, token, ttl):
            log.info("device busy; the wake-up is dropped", extra={"device": ctx.device_id})
            return []
        claimed: list[str] = []
        try:
            while (job_id := self._claim(token, ttl)) is not None:
                claimed.append(job_id)
                executor = self._executor(job_id)
                if not executor.uses_device:
                    # The run trains elsewhere (a Ray cluster): this host's device is free meanwhile.
                    leases.release_device(ctx.store, ctx.device_id, token)
                try:
                    outcome = self._run(job_id, token, executor)
                    if outcome is not None:
                        conclude(job_id, outcome)
                finally:
                    # However the run ended (finished, failed, cancelled): its slot is free. An
                    # exception leaves the lease to expire, so beat's reaper re-queues the job.
                    train_queue.release(ctx.store, job_id)
                held = (
                    leases.refresh_device(ctx.store, ctx.device_id, token, ttl)
                    if executor.uses_device
                    else leases.acquire_device(ctx.store, ctx.device_id, token, ttl)
                )
                if not held:
                    break  # our hold on the device expired: leave the rest to whoever holds it
        finally:
            leases.release_device(ctx.store, ctx.device_id, token)
        return claimed

    def _executor(self, job_id: str) -> Executor:
        job = record.load(self.ctx.store, job_id)
        return EXECUTORS[compute_of(job).executor if job is not None else PROCESS]

    def _claim(self, token: str, ttl: float) -> str | None:
        """The next job, its lease already ours (taken in the same step as the claim)."""
        ctx = self.ctx
        return train_queue.claim(
            ctx.store, ctx.settings.train_max_per_tenant, lease_token=token, lease_ttl_s=ttl, now=time.time()
        )

    def _run(self, job_id: str, token: str, executor: Executor) -> Trained | None:
        """Train a claimed job to the end; None when this run leaves it (cancelled, leased elsewhere)."""
        ctx = self.ctx
        job = record.load(ctx.store, job_id)
        if job is None or job.status in states.TERMINAL or job.stage not in STAGES:
            leases.release_lease(ctx.store, job_id, token)
            return None
        ttl = float(ctx.settings.train_lease_s)
        if not leases.acquire_lease(ctx.store, job_id, token, ttl, time.time()):
            log.info("job is leased by another worker", extra={"job_id": job_id})
            return None
        # On an exception the lease is left to expire: beat re-queues the job and it resumes.
        outcome = executor.run(ctx, job_id, token)
        leases.release_lease(ctx.store, job_id, token)
        return outcome


def _train(ctx: TrainingContext, job_id: str, token: str) -> Trained | None:
    job = record.load(ctx.store, job_id)  # again, now that we hold the lease
    if job is None or job.status in states.TERMINAL or job.stage not in STAGES:
        return None
    paused_step = local_state(job).paused_step
    resume = job.stage == "training" or paused_step is not None
    if job.stage == "training":
        lifecycle.record_event(
            ctx.store, job_id, "Training restarts on a new worker; resuming from the last checkpoint"
        )
    else:
        started = (
            f"Training resumed on {ctx.device_id} after the pause at step {paused_step}"
            if paused_step is not None
            else f"Training started on {ctx.device_id}"
        )
        if lifecycle.try_transition(ctx.store, job_id, states.RUNNING, "training", started) is None:
            return None
    spec = build_spec(ctx.settings, job, resume)
    spec_path = write_spec(ctx.settings, spec)
    _, extra_env = _device(ctx.settings)
    python = ctx.settings.train_python or sys.executable
    child = Child(
        [python, "-m", "service.training.run", "--spec", str(spec_path)],
        {**extra_env, **child_env(ctx.settings, job), "PYTHONUNBUFFERED": "1"},
        job_dir(ctx.settings, job_id) / "train.log",
    )
    log.info("training child started", extra={"job_id": job_id, "pid": child.pid, "resume": resume})

    def running(j: Job) -> None:
        local_state(j).child = {"pid": child.pid, "device": ctx.device_id}

    record.modify(ctx.store, job_id, running)
    run = _Run(ctx, job, child=child)
    try:
        stopped = _supervise(ctx, run, token)
        if not stopped:
            child.wait_exit(EXIT_WAIT_S)  # stdout closed: let it finish exiting on its own
    finally:
        code = child.stop(STOP_GRACE_S)  # a no-op when it already exited
    if stopped:
        return None
    if run.paused is not None and code == 0:
        _settle_pause(ctx, run)
        return None
    return _conclude(ctx, run, code)


@dataclass(frozen=True)
class Executor:
    """How a claimed job's run is carried out: ``run`` trains it to its end under the lease the
    caller holds (None when the run leaves the job: cancelled, paused, lease lost);
    ``uses_device``: the run holds this host's training device meanwhile."""

    run: Callable[[TrainingContext, str, str], Trained | None]
    uses_device: bool


def _ray_run(ctx: TrainingContext, job_id: str, token: str) -> Trained | None:
    from service.core.backends import ray_executor  # here: it imports this module

    return ray_executor.run(ctx, job_id, token)


# compute.executor -> its run (DESIGN §11: an executor is its module plus this entry).
EXECUTORS = {PROCESS: Executor(_train, uses_device=True), RAY: Executor(_ray_run, uses_device=False)}


@dataclass
class Relay:
    """A run's protocol messages (docs/local-trainer.md) turned into the job's events, metrics
    and checkpoints, whichever executor runs it; what it said last is kept for its end."""

    ctx: TrainingContext
    job: Job
    total_steps: int | None = None
    finished: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    progress_every: int = 1
    last_step: int = 0
    seen: set[str] = field(default_factory=set)
    pause_asked: bool = False
    paused: dict[str, Any] | None = None  # the child's ``paused`` message

    def handle(self, message: dict[str, Any]) -> None:
        _handle(self, message)


@dataclass
class _Run(Relay):
    child: Child = field(kw_only=True)


def _supervise(ctx: TrainingContext, run: _Run, token: str) -> bool:
    """Relay the child's messages until it closes stdout; True when we stopped it (cancel, lost lease)."""
    job_id = run.job.id
    ttl = float(ctx.settings.train_lease_s)
    beat_every = max(ttl / 4.0, 0.5)
    next_check = next_beat = time.monotonic()
    while True:
        try:
            message = run.child.next_message(timeout=0.25)
        except EOFError:
            return False
        if message is not None:
            _handle(run, message)
        now = time.monotonic()
        if now >= next_check:
            next_check = now + CHECK_EVERY_S
            current = repo.load(ctx.store, job_id)
            if current is None or current["status"] in states.TERMINAL:
                run.child.stop(STOP_GRACE_S)
                log.info("training stopped: job ended", extra={"job_id": job_id})
                return True
            if current["status"] == states.PAUSED and not run.pause_asked:
                _ask_pause(ctx, run)
        if now >= next_beat:
            next_beat = now + beat_every
            alive = leases.refresh_lease(ctx.store, job_id, token, ttl, time.time())
            leases.refresh_device(ctx.store, ctx.device_id, token, ttl)
            if not alive:
                run.child.stop(STOP_GRACE_S)
                log.warning("training stopped: lease lost", extra={"job_id": job_id})
                return True


def _ask_pause(ctx: TrainingContext, run: _Run) -> None:
    """The job was paused: the child saves a checkpoint at its next step, says ``paused`` and exits.

    The control file (not SIGUSR1) so that the request survives until the child's training loop
    looks, even when it is still loading the model (docs/local-trainer.md, "Pause and resume").
    """
    run.pause_asked = True
    out = output_dir(ctx.settings, run.job.id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "PAUSE").touch()
    log.info("training asked to pause", extra={"job_id": run.job.id})


def _settle_pause(ctx: TrainingContext, run: _Run) -> None:
    """The child paused: the job sits in ``paused`` (lease and device are released by the caller)."""
    data = run.paused or {}
    step = int(data.get("step") or run.last_step)

    def paused(job: Job) -> None:
        local_state(job).paused_step = step

    lifecycle.try_transition(
        ctx.store,
        run.job.id,
        *states.PAUSED_STATE,
        f"Training paused at step {step}; its checkpoint is kept and the device is free",
        apply=paused,
        data={"step": step},
    )


# --- the child's messages ----------------------------------------------------------------------


def _handle(run: Relay, message: dict[str, Any]) -> None:
    kind = message["type"]
    data = {k: v for k, v in message.items() if k != "type"}
    handler = _HANDLERS.get(kind)
    if handler is None:
        log.warning("unknown message from the training child", extra={"job_id": run.job.id, "kind": kind})
        return
    handler(run, data)


def _on_started(run: Relay, data: dict[str, Any]) -> None:
    store, job_id = run.ctx.store, run.job.id
    run.total_steps = int(data.get("total_steps") or 0) or None
    run.progress_every = max(1, (run.total_steps or PROGRESS_EVENTS) // PROGRESS_EVENTS)
    resumed = data.get("resumed_from_step")
    where = f"on {data.get('device', '?')}"
    if resumed:
        message = f"Resumed training from the checkpoint at step {resumed} of {run.total_steps} {where}"
    else:
        message = (
            f"Training {data.get('train_examples', '?')} examples for {run.total_steps} steps {where}"
            f" ({data.get('trainable_params', '?')} trainable parameters)"
        )
    lifecycle.record_event(store, job_id, message, data=data)


def _on_metrics(run: Relay, data: dict[str, Any]) -> None:
    store, job_id = run.ctx.store, run.job.id
    step = int(data["step"])
    row = metrics.row(data, metrics.columns_for(run.job.method))
    repo.put_metrics(store, job_id, [row])
    run.last_step = step
    total = run.total_steps
    if step == 1 or step % run.progress_every == 0 or step == total:
        message = f"Step {step}/{total or '?'}: training loss={_fmt(data.get('train_loss'))}"
        if data.get("train_reward_mean") is not None:  # reinforcement: the grader's mean score
            message += f", mean reward={_fmt(data.get('train_reward_mean'))}"
        if data.get("valid_loss") is not None:
            message += f", validation loss={_fmt(data.get('valid_loss'))}"
        eta = data.get("eta_s")

        def finish_estimate(job: Job) -> None:
            if isinstance(eta, (int, float)):
                job.estimated_finish = int(time.time() + float(eta))

        extra = {k: data.get(k) for k in ("tokens_per_s", "eta_s", "epoch") if data.get(k) is not None}
        lifecycle.record_event(
            store, job_id, message, type_="metrics", data={**row, **extra}, apply=finish_estimate
        )


def _on_checkpoint(run: Relay, data: dict[str, Any]) -> None:
    store, job = run.ctx.store, run.job
    step = int(data["step"])
    name = fine_tuned_model_name(job.model, job.tenant, job.suffix, job.id)
    checkpoint = {
        "id": ids.PREFIXES["checkpoint"] + hashlib.sha256(f"{job.id}:{step}".encode()).hexdigest()[:24],
        "object": "fine_tuning.job.checkpoint",
        "created_at": int(time.time()),
        "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
        "fine_tuning_job_id": job.id,
        "step_number": step,
        "metrics": {**metrics.row(data.get("metrics") or {}, metrics.columns_for(job.method)), "step": step},
    }
    lifecycle.record_checkpoint(store, job.id, checkpoint)


def _on_finished(run: Relay, data: dict[str, Any]) -> None:
    run.finished = data


def _on_paused(run: Relay, data: dict[str, Any]) -> None:
    run.paused = data


def _on_error(run: Relay, data: dict[str, Any]) -> None:
    run.error = {
        "code": str(data.get("code") or "training_failed"),
        "message": str(data.get("message") or ""),
    }


_HANDLERS = {
    "started": _on_started,
    "metrics": _on_metrics,
    "checkpoint": _on_checkpoint,
    "finished": _on_finished,
    "paused": _on_paused,
    "error": _on_error,
}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


# --- the end of a run --------------------------------------------------------------------------


def _conclude(ctx: TrainingContext, run: _Run, code: int) -> Trained | None:
    current = repo.load(ctx.store, run.job.id)
    if current is None or current["status"] in states.TERMINAL:
        return None
    if run.error is not None:
        return Trained(
            "training failed", error={**run.error, "message": run.error["message"] or "training failed"}
        )
    if code != 0 or run.finished is None:
        return Trained(
            "training failed", error={"code": "training_failed", "message": _crash_message(run, code)}
        )
    return finished_run(ctx, run, run.finished)


def finished_run(ctx: TrainingContext, run: Relay, finished: dict[str, Any]) -> Trained:
    """A run that said ``finished``: its model and result file become the job's outputs."""
    out = output_dir(ctx.settings, run.job.id)
    result = Path(finished.get("result_file") or out / "result.csv")
    result_files = (
        [str(result.resolve().relative_to(ctx.settings.data_dir.resolve()))] if result.exists() else []
    )

    def outputs(job: Job) -> None:
        state: LocalState = local_state(job)
        state.model_dir = str(finished.get("model_dir") or out / "model")
        state.result_files = result_files
        state.runtime_s = finished.get("train_runtime_s")

    return Trained(
        f"Training finished after {finished.get('steps', run.last_step)} steps; finalizing",
        trained_tokens=finished.get("trained_tokens"),
        apply=outputs,
    )


def _crash_message(run: _Run, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        cause = f"exited with code {code}" + (" before finishing" if code == 0 else "")
    tail = run.child.stderr_tail()
    return f"the training process {cause} without reporting an error" + (
        f"; its last log line: {tail}" if tail else ""
    )


# --- beat: reap expired leases -----------------------------------------------------------------


def reap_leases(settings: Settings, store: Store) -> list[str]:
    """Jobs whose training worker died: back in front of the train queue (bounded); their ids.

    The caller wakes a trainer when any came back.
    """
    requeued = []
    for job_id in leases.reap_expired_leases(store, time.time()):
        job = record.load(store, job_id)
        if job is not None and (job.status, job.stage) == states.PAUSING_STATE:
            train_queue.release(store, job_id)  # a paused job gives its slot back until resumed
            _settle_orphaned_pause(store, job_id)
            continue
        if job is None or job.status in states.TERMINAL or job.stage not in STAGES:
            train_queue.release(store, job_id)  # ended meanwhile: its slot, if it still held one
            continue
        restarts = retry.count_delivery(store, job_id, RESTARTS_STAGE)
        if restarts > settings.train_max_restarts:
            fail_job(
                store,
                job_id,
                "training_interrupted",
                f"training was interrupted {restarts} times (its worker died or stopped answering); "
                "giving up",
            )
            train_queue.release(store, job_id)
            continue
        train_queue.requeue(store, job_id, job.tenant, job.priority)
        lifecycle.record_event(
            store,
            job_id,
            f"The training worker stopped answering; re-queued to resume (restart {restarts} of "
            f"{settings.train_max_restarts}); waiting for a training device: position "
            f"{train_queue.position(store, job_id)}",
            level="warn",
        )
        requeued.append(job_id)
    return requeued


def wake_needed(store: Store) -> bool:
    """Beat's safety net: True (at most once per ``WAKE_EVERY_S``) while jobs wait in the queue."""
    return train_queue.waiting_count(store) > 0 and train_queue.wake_due(store, WAKE_EVERY_S)


def tend_queue(settings: Settings, store: Store) -> bool:
    """Beat's look at the train queue: reap dead workers' jobs; True when a trainer should wake."""
    return bool(reap_leases(settings, store)) or wake_needed(store)


def _settle_orphaned_pause(store: Store, job_id: str) -> None:
    """The worker died while its job was pausing: it is paused; a resume takes the newest checkpoint."""
    steps = [int(c["step_number"]) for c in repo.list_checkpoints(store, job_id)]
    step = max(steps, default=0)

    def paused(job: Job) -> None:
        local_state(job).paused_step = step

    lifecycle.try_transition(
        store,
        job_id,
        *states.PAUSED_STATE,
        "The training worker stopped answering while pausing; the job is paused at its last "
        f"checkpoint (step {step})",
        level="warn",
        apply=paused,
    )
