"""A simulated job's timeline: stage boundaries, metrics curve, events, names and result file."""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ORGANIZATION = "sandbox"
TAG = "[sandbox]"
# OpenAI's result-file name and header (the CSV behind `result_files`, served base64-wrapped by OpenAI).
RESULT_FILENAME = "step_metrics.csv"
RESULT_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "train_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
# A failed job's error (code, message) by the stage it failed at, unless the job names its own.
DEFAULT_ERRORS = {
    "validating_files": ("invalid_training_file", "The training file failed validation."),
    "queued": ("server_error", "The job failed while queued."),
    "running": ("server_error", "Training failed unexpectedly."),
}


def digest(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def derived_id(prefix: str, *parts: object) -> str:
    """An id that every concurrent reader computes identically (lazy state needs no coordination)."""
    return prefix + digest(*parts)[:24]


@dataclass(frozen=True)
class Event:
    """One point of a job's timeline, ``at`` seconds after creation."""

    at: float
    level: str
    message: str
    kind: str = "message"
    data: dict[str, Any] | None = None


@dataclass
class Timeline:
    """Stage boundaries, in scaled seconds after creation, and the job's deterministic metrics."""

    validated: float
    started: float
    step_s: float
    steps: int
    end: float
    fail_at: float | None
    checkpoint_steps: tuple[int, ...]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def status_at(self, t: float) -> str:
        if self.fail_at is not None and t >= self.fail_at:
            return "failed"
        if t < self.validated:
            return "validating_files"
        if t < self.started:
            return "queued"
        if t < self.end:
            return "running"
        return "succeeded"

    def step_time(self, step: int) -> float:
        return self.started + step * self.step_s


def _curve(job_id: str, steps: int, has_validation: bool) -> list[dict[str, Any]]:
    """Per-step metrics: loss falls exponentially from a start and floor seeded by the job id."""
    seed = int(digest(job_id, "curve")[:12], 16)
    start = 2.0 + (seed % 1000) / 1000.0
    floor = 0.15 + ((seed // 1000) % 1000) / 4000.0
    rate = 2.5 + ((seed // 1_000_000) % 100) / 100.0
    rows: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        loss = floor + (start - floor) * math.exp(-rate * step / steps)
        acc = max(0.0, min(1.0, 1.0 - loss / (start + 0.5)))
        row: dict[str, Any] = {
            "step": step,
            "train_loss": round(loss, 5),
            "train_mean_token_accuracy": round(acc, 5),
            "total_steps": steps,
        }
        if has_validation:
            row["valid_loss"] = round(loss * 1.07 + 0.02, 5)
            row["valid_mean_token_accuracy"] = round(max(0.0, acc - 0.03), 5)
            if step == steps:
                row["full_valid_loss"] = round(loss * 1.05 + 0.03, 5)
                row["full_valid_mean_token_accuracy"] = round(max(0.0, acc - 0.02), 5)
        rows.append(row)
    return rows


def timeline_of(job: Mapping[str, Any], scale: float) -> Timeline:
    f = job["sandbox"]
    steps = int(f["steps"])
    validated = f["validating_s"] * scale
    started = validated + f["queued_s"] * scale
    step_s = f["step_s"] * scale
    end = started + steps * step_s
    fail_at: float | None = None
    if f["fail_at"] == "validating_files":
        fail_at = validated
    elif f["fail_at"] == "queued":
        fail_at = started
    elif f["fail_at"] == "running":
        fail_at = started + math.ceil(steps / 2) * step_s
    checkpoints = tuple(sorted({max(1, round(steps * k / 3)) for k in (1, 2, 3)}))
    return Timeline(
        validated=validated,
        started=started,
        step_s=step_s,
        steps=steps,
        end=end,
        fail_at=fail_at,
        checkpoint_steps=checkpoints,
        metrics=_curve(job["id"], steps, bool(job.get("validation_file"))),
    )


def timeline_events(job: Mapping[str, Any], tl: Timeline) -> list[Event]:
    """Every event the job would emit without cancellation, oldest first."""
    jid = job["id"]
    events = [
        Event(0.0, "info", f"{TAG} Created fine-tuning job: {jid}"),
        Event(
            0.0,
            "info",
            f"{TAG} Validating training file: {job['training_file']}"
            + (f" and validation file: {job['validation_file']}" if job.get("validation_file") else ""),
        ),
    ]
    fail = tl.fail_at
    if job["sandbox"]["fail_at"] == "validating_files" and fail is not None:
        return [*events, _failure_event(job, fail)]
    events.append(Event(tl.validated, "info", f"{TAG} Files validated, moving job to queued state"))
    if job["sandbox"]["fail_at"] == "queued" and fail is not None:
        return [*events, _failure_event(job, fail)]
    events.append(Event(tl.started, "info", f"{TAG} Fine-tuning job started (simulated; nothing is trained)"))
    for row in tl.metrics:
        at = tl.step_time(row["step"])
        if fail is not None and at > fail:
            return [*events, _failure_event(job, fail)]
        message = f"{TAG} Step {row['step']}/{tl.steps}: training loss={row['train_loss']}"
        events.append(Event(at, "info", message, kind="metrics", data=dict(row)))
        if row["step"] in tl.checkpoint_steps:
            events.append(Event(at, "info", f"{TAG} Checkpoint created at step {row['step']}"))
    if fail is not None:
        return [*events, _failure_event(job, fail)]
    events.append(Event(tl.end, "info", f"{TAG} New fine-tuned model created: {fine_tuned_model(job)}"))
    events.append(Event(tl.end, "info", f"{TAG} The job has successfully completed"))
    return events


def _failure_event(job: Mapping[str, Any], at: float) -> Event:
    stage = job["sandbox"]["fail_at"]
    message = (job["sandbox"].get("error") or {}).get("message", DEFAULT_ERRORS[stage][1])
    return Event(at, "error", f"{TAG} Job failed at {stage}: {message}")


def terminal_at(job: Mapping[str, Any], tl: Timeline) -> float | None:
    """When the simulated job reached its terminal status (epoch seconds, sub-second precision)."""
    if job["status"] == "cancelled":
        return float(job["cancelled_at"])
    if job["status"] == "failed":
        return float(job["created_at_f"] + (tl.fail_at or 0.0))
    if job["status"] == "succeeded":
        return float(job["created_at_f"] + tl.end)
    return None


def reached_step(job: Mapping[str, Any], tl: Timeline, now: float) -> int:
    """The last training step completed by ``now`` (bounded by cancel or failure)."""
    elapsed = now - job["created_at_f"]
    if job.get("cancelled_at") is not None:
        elapsed = min(elapsed, job["cancelled_at"] - job["created_at_f"])
    if tl.fail_at is not None:
        elapsed = min(elapsed, tl.fail_at)
    if elapsed < tl.started:
        return 0
    if tl.step_s <= 0:
        return tl.steps
    return max(0, min(tl.steps, int((elapsed - tl.started) / tl.step_s + 1e-9)))


def fine_tuned_model(job: Mapping[str, Any]) -> str:
    return f"ft:{job['model']}:{ORGANIZATION}:{job.get('suffix') or ''}:{job['id'].removeprefix('ftjob-')}"


def checkpoint_model(job: Mapping[str, Any], step: int) -> str:
    return f"{fine_tuned_model(job)}:ckpt-step-{step}"


def result_file_id(job_id: str) -> str:
    return derived_id("file-", job_id, "result")


def trained_tokens(job: Mapping[str, Any]) -> int:
    return max(1, int(job["training_bytes"]) // 4) * int(job["hyperparameters"]["n_epochs"])


def result_csv(job: Mapping[str, Any], tl: Timeline) -> bytes:
    """OpenAI's result file: one metrics row a step, base64-wrapped when the job asked for it."""
    lines = [",".join(RESULT_COLUMNS)]
    for row in tl.metrics:
        values = dict(row, train_accuracy=row["train_mean_token_accuracy"])
        lines.append(",".join("" if values.get(c) is None else str(values[c]) for c in RESULT_COLUMNS))
    csv = ("\n".join(lines) + "\n").encode()
    return base64.b64encode(csv) if job["sandbox"].get("result_base64") else csv
