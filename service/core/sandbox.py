"""The sandbox provider: a deterministic, time-scaled OpenAI fine-tuning simulator with fault injection."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core import openai_shapes
from service.core.clock import Clock, SystemClock
from service.core.errors import InvalidRequest, NotFound, RateLimited, TunelineError
from service.core.pagination import page_list
from service.core.store import Store, keys
from service.core.store.base import Pipeline, dumps, loads
from service.core.uploads import HashingSpool

ORGANIZATION = "sandbox"
TAG = "[sandbox]"
TERMINAL = ("succeeded", "failed", "cancelled")
FILE_PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "user_data", "vision")
RESULT_FILENAME = "step_metrics.csv"
# OpenAI's result-file header (the CSV behind `result_files`, served base64-wrapped by OpenAI).
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
# Base durations in seconds; every one is multiplied by the time scale (tests use 0.02).
VALIDATING_S = 2.0
QUEUED_S = 2.0
STEP_S = 1.0
DEFAULT_STEPS = 10
MAX_SLOW_MS = 10_000
CHARS_PER_TOKEN = 4
JOB_READS_KEPT = 10_000
FAIL_STAGES = ("validating_files", "queued", "running")
# Header faults for create, account-wide: the caller opts in per request.
CREATE_HEADER_FAULTS = ("create-500", "create-429", "create-timeout-after-create")
DEFAULT_ERRORS = {
    "validating_files": ("invalid_training_file", "The training file failed validation."),
    "queued": ("server_error", "The job failed while queued."),
    "running": ("server_error", "Training failed unexpectedly."),
}
BUILTIN_MODELS = (
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo-0125",
    "babbage-002",
    "davinci-002",
)


def base_models() -> tuple[str, ...]:
    """Models the sandbox accepts: Tuneline's model table when present, else a built-in list."""
    try:
        from service.core.datasets.models import MODELS
    except ImportError:  # pragma: no cover - the table ships with the dataset engine
        return BUILTIN_MODELS
    return tuple(MODELS)


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def _derived_id(prefix: str, *parts: object) -> str:
    """An id that every concurrent reader computes identically (lazy state needs no coordination)."""
    return prefix + _digest(*parts)[:24]


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


class SandboxServerError(TunelineError):
    """An injected 500."""

    status = 500
    type = "server_error"
    code = "server_error"


@dataclass(frozen=True)
class Event:
    """One point of a job's timeline, ``at`` seconds after creation."""

    at: float
    level: str
    message: str
    kind: str = "message"
    data: dict[str, Any] | None = None


@dataclass
class Faults:
    """The per-job ``sandbox`` object, parsed."""

    fail_at: str | None = None
    error: dict[str, str] | None = None
    rate_limit_count: int = 0
    retry_after: float = 1.0
    server_errors: int = 0
    slow_ms: int = 0
    result_base64: bool = False
    steps: int = DEFAULT_STEPS
    validating_s: float = VALIDATING_S
    queued_s: float = QUEUED_S
    step_s: float = STEP_S
    create_fault: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Faults:
        raw = raw or {}
        f = cls()
        if raw.get("fail_at") is not None:
            if raw["fail_at"] not in FAIL_STAGES:
                raise InvalidRequest(
                    f"sandbox.fail_at must be one of {', '.join(FAIL_STAGES)}.",
                    param="sandbox.fail_at",
                    code="invalid_value",
                )
            f.fail_at = raw["fail_at"]
        if raw.get("error"):
            f.error = {k: str(v) for k, v in dict(raw["error"]).items() if k in ("code", "message")}
        rate = raw.get("rate_limit") or {}
        f.rate_limit_count = _non_negative_int(rate.get("count", 0), "sandbox.rate_limit.count")
        f.retry_after = float(rate.get("retry_after", 1.0))
        f.server_errors = _non_negative_int(raw.get("server_errors", 0), "sandbox.server_errors")
        f.slow_ms = min(_non_negative_int(raw.get("slow_ms", 0), "sandbox.slow_ms"), MAX_SLOW_MS)
        f.result_base64 = bool(raw.get("result_base64", False))
        f.steps = max(1, min(_non_negative_int(raw.get("steps", DEFAULT_STEPS), "sandbox.steps"), 1000))
        for name in ("validating_s", "queued_s", "step_s"):
            if raw.get(name) is not None:
                setattr(f, name, max(0.0, float(raw[name])))
        if raw.get("create_fault"):
            cf = dict(raw["create_fault"])
            if cf.get("when", "after") not in ("before", "after"):
                raise InvalidRequest(
                    "sandbox.create_fault.when must be 'before' or 'after'.",
                    param="sandbox.create_fault.when",
                    code="invalid_value",
                )
            f.create_fault = {
                "when": cf.get("when", "after"),
                "count": _non_negative_int(cf.get("count", 1), "sandbox.create_fault.count"),
            }
        return f

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _non_negative_int(value: Any, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{param} must be a non-negative integer.", param=param, code="invalid_value")
    return value


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
    seed = int(_digest(job_id, "curve")[:12], 16)
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


def _resolve_hyperparameters(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, method) with ``auto`` resolved, as OpenAI reports them once validated."""
    method = dict(body.get("method") or {"type": "supervised"})
    method_type = method.get("type", "supervised")
    if method_type not in ("supervised", "dpo"):
        raise InvalidRequest(
            f"The sandbox does not simulate method {method_type!r}.",
            param="method.type",
            code="invalid_value",
        )
    inner = dict((method.get(method_type) or {}).get("hyperparameters") or {})
    given = {**dict(body.get("hyperparameters") or {}), **inner}
    param_root = f"method.{method_type}.hyperparameters" if inner else "hyperparameters"
    limits = {
        "n_epochs": (1, 50, 3),
        "batch_size": (1, 256, 1),
        "learning_rate_multiplier": (1e-6, 10.0, 2.0),
    }
    resolved: dict[str, Any] = {}
    for name, (low, high, default) in limits.items():
        value = given.get(name, "auto")
        if value == "auto" or value is None:
            resolved[name] = default
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise InvalidRequest(
                f"{name} must be 'auto' or a number between {low} and {high}.",
                param=f"{param_root}.{name}",
                code="invalid_hyperparameter",
            )
        resolved[name] = int(value) if name != "learning_rate_multiplier" else float(value)
    extra = {k: v for k, v in given.items() if k not in limits}
    if method_type == "dpo":
        extra.setdefault("beta", 0.1)
    method[method_type] = {"hyperparameters": {**resolved, **extra}}
    method["type"] = method_type
    return resolved, method


class Sandbox:
    """The simulator's use cases; state lives in Redis, bytes under ``data_dir/sandbox``."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        time_scale: float = 1.0,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.dir = data_dir / "sandbox"
        self.scale = time_scale
        self.clock = clock or SystemClock()
        self.sleep = sleep

    # ---- injected slowness and account-wide faults ---------------------------------------

    def _slow(self, operation: str, slow_ms: int) -> None:
        """Hold the request open ``slow_ms``, counted in ``_stats.slow_in_flight`` meanwhile (so a
        caller can see that its request is in flight, e.g. to kill a worker inside a call)."""
        if not slow_ms:
            return
        self.store.r.hincrby(keys.sandbox_slow_in_flight(), operation, 1)
        try:
            self.sleep(min(int(slow_ms), MAX_SLOW_MS) / 1000.0)
        finally:
            self.store.r.hincrby(keys.sandbox_slow_in_flight(), operation, -1)

    def account_faults(self) -> dict[str, Any]:
        """Faults that apply to the whole sandbox account (the per-job ones are in ``sandbox``)."""
        raw = loads(self.store.r.get(keys.sandbox_account_faults()))  # type: ignore[arg-type]
        return {"object": "sandbox.faults", "upload_slow_ms": int((raw or {}).get("upload_slow_ms", 0))}

    def set_account_faults(self, faults: Mapping[str, Any]) -> dict[str, Any]:
        slow = min(_non_negative_int(faults.get("upload_slow_ms", 0), "upload_slow_ms"), MAX_SLOW_MS)
        self.store.r.set(keys.sandbox_account_faults(), dumps({"upload_slow_ms": slow}))
        return self.account_faults()

    # ---- files ---------------------------------------------------------------------------

    def create_file(self, spool: HashingSpool, filename: str, purpose: str) -> dict[str, Any]:
        """Keep an upload; sandbox files are ``processed`` at once (after any account-wide slowness)."""
        self._slow("files.create", self.account_faults()["upload_slow_ms"])
        if purpose not in FILE_PURPOSES:
            spool.discard()
            raise InvalidRequest(f"Invalid purpose {purpose!r}.", param="purpose", code="invalid_purpose")
        spool.finish()
        record: dict[str, Any] = {
            "id": new_id("file-"),
            "object": "file",
            "bytes": spool.size,
            "created_at": int(self.clock.now()),
            "filename": os.path.basename(filename or "upload.jsonl"),
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        os.replace(spool.path, self.dir / record["id"])
        spool.committed = True
        self._save_file(record)
        return record

    def _save_file(self, record: dict[str, Any], nx: bool = False) -> None:
        pipe = self.store.r.pipeline(transaction=True)
        pipe.set(keys.sandbox_file(record["id"]), dumps(record), nx=nx)
        pipe.zadd(keys.sandbox_files(), {record["id"]: self.clock.now() * 1000}, nx=True)
        pipe.execute()

    def _load_file(self, file_id: str) -> dict[str, Any] | None:
        return loads(self.store.r.get(keys.sandbox_file(file_id)))  # type: ignore[arg-type, no-any-return]

    def get_file(self, file_id: str) -> dict[str, Any]:
        record = self._load_file(file_id)
        if record is None:
            raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
        return {k: v for k, v in record.items() if k != "result_of"}

    def list_files(
        self,
        after: str | None,
        limit: int,
        purpose: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        found, more = self.store.walk(
            keys.sandbox_files(),
            after,
            limit,
            lambda ids: self.store.load_many([keys.sandbox_file(i) for i in ids]),
            None if purpose is None else (lambda f: f["purpose"] == purpose),
        )
        return [self._public_file(f) for f in found], more

    @staticmethod
    def _public_file(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k != "result_of"}

    def file_content(self, file_id: str) -> bytes:
        record = self._load_file(file_id)
        if record is None:
            raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
        if record.get("result_of"):
            job = self._load_job(record["result_of"])
            self._slow("files.content", int(job["sandbox"].get("slow_ms") or 0))
            return self._result_bytes(job)
        return (self.dir / file_id).read_bytes()

    # ---- jobs: create --------------------------------------------------------------------

    def create_job(self, body: Mapping[str, Any], header_fault: str | None = None) -> dict[str, Any]:
        """Validate like OpenAI, store the job, count it; injected create faults apply here."""
        if header_fault and header_fault not in CREATE_HEADER_FAULTS:
            raise InvalidRequest(
                f"Unknown X-Sandbox-Fault {header_fault!r}; known: {', '.join(CREATE_HEADER_FAULTS)}.",
                param="X-Sandbox-Fault",
                code="invalid_value",
            )
        if header_fault == "create-500":
            raise SandboxServerError(f"{TAG} Injected error before create (X-Sandbox-Fault: create-500).")
        if header_fault == "create-429":
            raise RateLimited(f"{TAG} Injected rate limit on create.", headers={"Retry-After": "1"})
        faults = Faults.parse(body.get("sandbox"))
        self._slow("jobs.create", faults.slow_ms)
        metadata = {str(k): str(v) for k, v in dict(body.get("metadata") or {}).items()}
        tuneline_job = metadata.get("tuneline_job_id")
        attempt = 0
        if tuneline_job:
            attempt = int(self.store.r.hincrby(keys.sandbox_create_attempts(), tuneline_job, 1))  # type: ignore[arg-type]
        per_job = faults.create_fault
        count = int(per_job["count"]) if per_job else 0
        # Without a Tuneline job id there is nothing to count against: every create fails.
        failing = count > 0 and (attempt == 0 or attempt <= count)
        if failing and per_job and per_job["when"] == "before":
            raise SandboxServerError(f"{TAG} Injected error before create (sandbox.create_fault).")
        job = self._new_job(body, faults, metadata)
        pipe = self.store.r.pipeline(transaction=True)
        pipe.set(keys.sandbox_job(job["id"]), dumps(job))
        pipe.zadd(keys.sandbox_jobs(), {job["id"]: job["created_at_f"] * 1000})
        pipe.incr(keys.sandbox_counter("creates"))
        if tuneline_job:
            pipe.hincrby(keys.sandbox_creates_by_tuneline_job(), tuneline_job, 1)
        if faults.rate_limit_count:
            pipe.set(keys.sandbox_read_fault(job["id"], "rate_limit"), faults.rate_limit_count)
        if faults.server_errors:
            pipe.set(keys.sandbox_read_fault(job["id"], "server_errors"), faults.server_errors)
        pipe.execute()
        if header_fault == "create-timeout-after-create" or (failing and per_job):
            # The job exists but the caller cannot know: it must look before creating again.
            raise SandboxServerError(f"{TAG} Injected error after the job was created.")
        return self.public_job(job)

    def _new_job(self, body: Mapping[str, Any], faults: Faults, metadata: dict[str, str]) -> dict[str, Any]:
        model = str(body.get("model") or "")
        if model not in base_models():
            raise InvalidRequest(
                f"Model {model!r} is not available for fine-tuning in the sandbox; "
                f"available: {', '.join(base_models())}.",
                param="model",
                code="model_not_found",
            )
        training = self._load_file(str(body.get("training_file") or ""))
        if training is None or training["purpose"] != "fine-tune":
            raise InvalidRequest(
                f"invalid training_file: {body.get('training_file')}",
                param="training_file",
                code="invalid_training_file",
            )
        validation_id = body.get("validation_file")
        if validation_id:
            validation = self._load_file(str(validation_id))
            if validation is None or validation["purpose"] != "fine-tune":
                raise InvalidRequest(
                    f"invalid validation_file: {validation_id}",
                    param="validation_file",
                    code="invalid_validation_file",
                )
        suffix = body.get("suffix")
        if suffix is not None and (len(str(suffix)) > 64 or ":" in str(suffix)):
            raise InvalidRequest(
                "suffix must be at most 64 characters and contain no ':'.",
                param="suffix",
                code="invalid_value",
            )
        hyperparameters, method = _resolve_hyperparameters(body)
        job_id = new_id("ftjob-")
        now = self.clock.now()
        seed = body.get("seed")
        return {
            "id": job_id,
            "created_at_f": now,
            "model": model,
            "training_file": training["id"],
            "validation_file": validation_id or None,
            "hyperparameters": hyperparameters,
            "method": method,
            "suffix": suffix,
            "seed": int(seed) if seed is not None else int(_digest(job_id, "seed")[:7], 16),
            "metadata": metadata or None,
            "sandbox": faults.as_dict(),
            "status": "validating_files",
            "training_bytes": int(training["bytes"]),
            "finished_at": None,
            "cancelled_at": None,
            "error": None,
        }

    # ---- jobs: read ----------------------------------------------------------------------

    def _load_job(self, job_id: str) -> dict[str, Any]:
        job = loads(self.store.r.get(keys.sandbox_job(job_id)))  # type: ignore[arg-type]
        if job is None:
            raise NotFound(
                f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="fine_tune_not_found"
            )
        return job  # type: ignore[no-any-return]

    def _advance(self, job: dict[str, Any], now: float) -> dict[str, Any]:
        """The stored job moved to where its timeline says it is at ``now``; terminal is sticky."""
        if job["status"] in TERMINAL:
            return job
        tl = timeline_of(job, self.scale)
        status = tl.status_at(now - job["created_at_f"])
        if status == job["status"]:
            return job
        job = dict(job, status=status)
        if status == "failed":
            stage = job["sandbox"]["fail_at"]
            code, message = DEFAULT_ERRORS[stage]
            err = job["sandbox"].get("error") or {}
            job["error"] = {
                "code": err.get("code", code),
                "message": f"{TAG} {err.get('message', message)}",
                "param": "training_file" if stage == "validating_files" else None,
            }
            job["finished_at"] = int(job["created_at_f"] + (tl.fail_at or 0))
        elif status == "succeeded":
            job["finished_at"] = int(job["created_at_f"] + tl.end)
        return job

    def _refresh(self, job_id: str) -> dict[str, Any]:
        """Read a job, persisting a stage change; concurrent readers agree, so a lost race is harmless."""

        def advance(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any] | None:
            job = self._advance(stored, self.clock.now())
            if job == stored:
                return None
            if job["status"] == "succeeded":
                self._write_result_file(pipe, job)
            return job

        job = self.store.update_json(keys.sandbox_job(job_id), advance)
        return job if job is not None else self._load_job(job_id)

    def _write_result_file(self, pipe: Any, job: dict[str, Any]) -> None:
        file_id = result_file_id(job["id"])
        record = {
            "id": file_id,
            "object": "file",
            "bytes": len(self._result_bytes(job)),
            "created_at": job["finished_at"],
            "filename": RESULT_FILENAME,
            "purpose": "fine-tune-results",
            "status": "processed",
            "status_details": None,
            "expires_at": None,
            "result_of": job["id"],
        }
        pipe.set(keys.sandbox_file(file_id), dumps(record), nx=True)
        pipe.zadd(keys.sandbox_files(), {file_id: job["finished_at"] * 1000}, nx=True)

    def _apply_read_faults(self, job_id: str, operation: str) -> None:
        """Injected slowness, 429s and 500s for the next N reads of a job, in that order."""
        job = self._load_job(job_id)
        faults = job["sandbox"]
        self._slow(operation, int(faults.get("slow_ms") or 0))
        if (
            faults.get("rate_limit_count")
            and int(
                self.store.r.decr(  # type: ignore[arg-type]
                    keys.sandbox_read_fault(job_id, "rate_limit")
                )
            )
            >= 0
        ):
            retry_after = faults.get("retry_after", 1.0)
            raise RateLimited(
                f"{TAG} Injected rate limit; retry after {retry_after} s.",
                headers={"Retry-After": f"{retry_after:g}"},
            )
        if (
            faults.get("server_errors")
            and int(
                self.store.r.decr(  # type: ignore[arg-type]
                    keys.sandbox_read_fault(job_id, "server_errors")
                )
            )
            >= 0
        ):
            raise SandboxServerError(f"{TAG} Injected server error.")

    def get_job(self, job_id: str) -> dict[str, Any]:
        pipe = self.store.r.pipeline(transaction=False)
        pipe.lpush(keys.sandbox_job_reads(), repr(self.clock.now()))
        pipe.ltrim(keys.sandbox_job_reads(), 0, JOB_READS_KEPT - 1)
        pipe.execute()
        self._apply_read_faults(job_id, "jobs.retrieve")
        return self.public_job(self._refresh(job_id))

    def list_jobs(
        self, after: str | None, limit: int, metadata: Mapping[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; ``metadata`` filters on exact key/value pairs (the provider's look-before-create)."""
        wanted = dict(metadata or {})

        def matches(job: dict[str, Any]) -> bool:
            meta = job.get("metadata") or {}
            return all(meta.get(k) == v for k, v in wanted.items())

        def load(job_id: str) -> dict[str, Any] | None:
            try:
                return self._refresh(job_id)
            except NotFound:
                return None

        found, more = self.store.walk(
            keys.sandbox_jobs(), after, limit, lambda ids: [load(i) for i in ids], matches
        )
        return [self.public_job(j) for j in found], more

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel unless already terminal (then the job is returned unchanged)."""

        def cancel(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            now = self.clock.now()
            job = self._advance(stored, now)
            if job["status"] not in TERMINAL:
                job = dict(job, status="cancelled", cancelled_at=now, finished_at=int(now))
            if job["status"] == "succeeded":
                self._write_result_file(pipe, job)
            return job

        job = self.store.update_json(keys.sandbox_job(job_id), cancel)
        return self.public_job(job if job is not None else self._load_job(job_id))

    def public_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's ``fine_tuning.job`` object."""
        tl = timeline_of(job, self.scale)
        succeeded = job["status"] == "succeeded"
        estimated = int(job["created_at_f"] + tl.end) if job["status"] in ("queued", "running") else None
        return {
            "id": job["id"],
            "object": "fine_tuning.job",
            "created_at": int(job["created_at_f"]),
            "error": job["error"],
            "fine_tuned_model": fine_tuned_model(job) if succeeded else None,
            "finished_at": job["finished_at"],
            "hyperparameters": job["hyperparameters"],
            "model": job["model"],
            "organization_id": ORGANIZATION,
            "result_files": [result_file_id(job["id"])] if succeeded else [],
            "seed": job["seed"],
            "status": job["status"],
            "trained_tokens": trained_tokens(job) if succeeded else None,
            "training_file": job["training_file"],
            "validation_file": job["validation_file"],
            "estimated_finish": estimated,
            "integrations": [],
            "metadata": job["metadata"],
            "method": job["method"],
            "user_provided_suffix": job["suffix"],
            "terminal_at": _terminal_at(job, tl),
        }

    # ---- events, checkpoints, results ----------------------------------------------------

    def _visible_events(self, job: dict[str, Any]) -> list[tuple[str, Event]]:
        """(id, event) oldest first, up to now or the job's end, whichever is earlier."""
        tl = timeline_of(job, self.scale)
        elapsed = self.clock.now() - job["created_at_f"]
        if job["cancelled_at"] is not None:
            elapsed = min(elapsed, job["cancelled_at"] - job["created_at_f"])
        events = [e for e in _timeline_events(job, tl) if e.at <= elapsed]
        out = [(_derived_id("ftevent-", job["id"], i), e) for i, e in enumerate(events)]
        if job["status"] == "cancelled":
            out.append(
                (
                    _derived_id("ftevent-", job["id"], "cancelled"),
                    Event(job["cancelled_at"] - job["created_at_f"], "info", f"{TAG} Job cancelled."),
                )
            )
        return out

    def list_events(self, job_id: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        self._apply_read_faults(job_id, "jobs.events")
        job = self._refresh(job_id)
        items = [
            {
                "id": eid,
                "object": "fine_tuning.job.event",
                "created_at": int(job["created_at_f"] + e.at),
                "level": e.level,
                "message": e.message,
                "data": e.data or {},
                "type": e.kind,
            }
            for eid, e in reversed(self._visible_events(job))
        ]
        return page_list(items, after, limit)

    def list_checkpoints(
        self,
        job_id: str,
        after: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bool]:
        self._apply_read_faults(job_id, "jobs.checkpoints")
        job = self._refresh(job_id)
        tl = timeline_of(job, self.scale)
        reached = _reached_step(job, tl, self.clock.now())
        items = []
        for step in reversed(tl.checkpoint_steps):
            if step > reached:
                continue
            row = tl.metrics[step - 1]
            items.append(
                {
                    "id": _derived_id("ftckpt-", job["id"], step),
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": int(job["created_at_f"] + tl.step_time(step)),
                    "fine_tuned_model_checkpoint": checkpoint_model(job, step),
                    "fine_tuning_job_id": job["id"],
                    "step_number": step,
                    "metrics": {k: v for k, v in row.items() if k != "total_steps"},
                }
            )
        return page_list(items, after, limit)

    def _result_bytes(self, job: dict[str, Any]) -> bytes:
        tl = timeline_of(job, self.scale)
        lines = [",".join(RESULT_COLUMNS)]
        for row in tl.metrics:
            values = dict(row, train_accuracy=row["train_mean_token_accuracy"])
            lines.append(",".join("" if values.get(c) is None else str(values[c]) for c in RESULT_COLUMNS))
        csv = ("\n".join(lines) + "\n").encode()
        return base64.b64encode(csv) if job["sandbox"].get("result_base64") else csv

    # ---- inference -----------------------------------------------------------------------

    def _trained_model(self, model: str) -> dict[str, Any]:
        """The succeeded job (or reached checkpoint) behind a sandbox model name."""
        parts = model.split(":")
        not_found = NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
        if len(parts) not in (5, 6) or parts[0] != "ft" or parts[2] != ORGANIZATION:
            raise not_found
        try:
            job = self._refresh("ftjob-" + parts[4])
        except NotFound:
            raise not_found from None
        if len(parts) == 5 and (job["status"] != "succeeded" or fine_tuned_model(job) != model):
            raise not_found
        if len(parts) == 6:
            tl = timeline_of(job, self.scale)
            steps = [
                s
                for s in tl.checkpoint_steps
                if s <= _reached_step(job, tl, self.clock.now()) and checkpoint_model(job, s) == model
            ]
            if not steps:
                raise not_found
        return job

    def _answer(
        self, job: dict[str, Any], model: str, prompt: str, max_tokens: int | None, stop: list[str] | None
    ) -> tuple[str, str]:
        """(text, finish_reason): the trained answer for a prompt seen in training, else a canned one."""
        known = _training_answers(self.dir / job["training_file"]).get(prompt.strip())
        text = known if known is not None else canned_answer(model, prompt)
        finish = "stop"
        for s in stop or []:
            if s and s in text:
                text = text[: text.index(s)]
        if max_tokens is not None and len(text) > max_tokens * CHARS_PER_TOKEN:
            text, finish = text[: max_tokens * CHARS_PER_TOKEN], "length"
        return text, finish

    def chat_completion(
        self,
        model: str,
        messages: list[Mapping[str, Any]],
        max_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> dict[str, Any]:
        """A chat answer: the training answer when the last user message matches one exactly."""
        job = self._trained_model(model)
        prompt = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        answer, finish = self._answer(job, model, prompt, max_tokens, stop)
        return openai_shapes.chat_completion(
            model,
            answer,
            finish,
            _tokens(" ".join(_text(m.get("content")) for m in messages), answer),
            int(self.clock.now()),
            id_=_derived_id("chatcmpl-sandbox-", model, prompt),
            fingerprint=ORGANIZATION,
        )

    def completion(
        self,
        model: str,
        prompt: str | list[str],
        max_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> dict[str, Any]:
        job = self._trained_model(model)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, list) else []
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InvalidRequest(
                "prompt must be a string or a non-empty list of strings.",
                param="prompt",
                code="invalid_value",
            )
        answers = [self._answer(job, model, p, max_tokens, stop) for p in prompts]
        return openai_shapes.text_completion(
            model,
            answers,
            _tokens(" ".join(prompts), " ".join(text for text, _ in answers)),
            int(self.clock.now()),
            id_=_derived_id("cmpl-sandbox-", model, *prompts),
            fingerprint=ORGANIZATION,
        )

    # ---- counters and helpers ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        by_job = self.store.r.hgetall(keys.sandbox_creates_by_tuneline_job())
        in_flight = self.store.r.hgetall(keys.sandbox_slow_in_flight())
        return {
            "creates": int(self.store.r.get(keys.sandbox_counter("creates")) or 0),  # type: ignore[arg-type]
            "creates_by_tuneline_job": {k: int(v) for k, v in by_job.items()},  # type: ignore[union-attr]
            # Wall-clock times of the latest job retrieves (a provider poll each), oldest first.
            "job_reads": [float(t) for t in reversed(self.store.r.lrange(keys.sandbox_job_reads(), 0, -1))],  # type: ignore[union-attr]
            "slow_in_flight": {k: int(v) for k, v in in_flight.items() if int(v)},  # type: ignore[union-attr]
        }


def _timeline_events(job: Mapping[str, Any], tl: Timeline) -> list[Event]:
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


def _terminal_at(job: Mapping[str, Any], tl: Timeline) -> float | None:
    """When the simulated job reached its terminal status (epoch seconds, sub-second precision)."""
    if job["status"] == "cancelled":
        return float(job["cancelled_at"])
    if job["status"] == "failed":
        return float(job["created_at_f"] + (tl.fail_at or 0.0))
    if job["status"] == "succeeded":
        return float(job["created_at_f"] + tl.end)
    return None


def _reached_step(job: Mapping[str, Any], tl: Timeline, now: float) -> int:
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


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _tokens(prompt: str, answer: str) -> tuple[int, int]:
    # A rough count (about 4 characters a token) is enough for a simulator's usage block.
    return max(1, len(prompt) // CHARS_PER_TOKEN), max(1, len(answer) // CHARS_PER_TOKEN)


@functools.lru_cache(maxsize=16)
def _training_answers(path: Path) -> dict[str, str]:
    """Prompt → answer of a sandbox training file (chat or prompt/completion rows), for recall."""
    out: dict[str, str] = {}
    try:
        fh = path.open(encoding="utf-8-sig", errors="replace")
    except OSError:
        return out
    with fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            messages = row.get("messages")
            if isinstance(messages, list) and messages:
                users = [m for m in messages[:-1] if isinstance(m, dict) and m.get("role") == "user"]
                last = messages[-1]
                if users and isinstance(last, dict) and last.get("role") == "assistant":
                    out.setdefault(_text(users[-1].get("content")).strip(), _text(last.get("content")))
            elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
                out.setdefault(row["prompt"].strip(), row["completion"])
    return out


def canned_answer(model: str, prompt: str) -> str:
    echo = prompt.strip().replace("\n", " ")
    if len(echo) > 200:
        echo = echo[:200] + "…"
    return f'{TAG} Simulated output of {model}; no model was trained. You said: "{echo}"'


def fine_tuned_model(job: Mapping[str, Any]) -> str:
    return f"ft:{job['model']}:{ORGANIZATION}:{job.get('suffix') or ''}:{job['id'].removeprefix('ftjob-')}"


def checkpoint_model(job: Mapping[str, Any], step: int) -> str:
    return f"{fine_tuned_model(job)}:ckpt-step-{step}"


def result_file_id(job_id: str) -> str:
    return _derived_id("file-", job_id, "result")


def trained_tokens(job: Mapping[str, Any]) -> int:
    return max(1, int(job["training_bytes"]) // 4) * int(job["hyperparameters"]["n_epochs"])


def api_key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of the sandbox key."""
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), expected.encode())
