"""The sandbox's use cases: files, the lifecycle of simulated jobs, their events, checkpoints and results."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from service.core.clock import Clock, SystemClock
from service.core.datasets.models import MODELS
from service.core.errors import Conflict, InvalidRequest, NotFound, RateLimited, TunelineError
from service.core.pagination import page_list
from service.core.store import Store
from service.core.store.base import Pipeline
from service.core.uploads import HashingSpool
from service.sandbox import answers
from service.sandbox.faults import Faults
from service.sandbox.store import SandboxStore
from service.sandbox.timeline import (
    DEFAULT_ERRORS,
    ORGANIZATION,
    RESULT_FILENAME,
    TAG,
    Event,
    checkpoint_model,
    derived_id,
    digest,
    fine_tuned_model,
    reached_step,
    result_csv,
    result_file_id,
    terminal_at,
    timeline_events,
    timeline_of,
    trained_tokens,
)

TERMINAL = ("succeeded", "failed", "cancelled")
FILE_PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "batch", "user_data", "vision")
# OpenAI's hyperparameter bounds and what ``auto`` resolves to here: name -> (low, high, auto).
HYPERPARAMETERS = {
    "n_epochs": (1, 50, 3),
    "batch_size": (1, 256, 1),
    "learning_rate_multiplier": (1e-6, 10.0, 2.0),
}
# Reinforcement's own knobs and what ``auto`` resolves to here (the grader is echoed as sent).
REINFORCEMENT_DEFAULTS: dict[str, Any] = {
    "compute_multiplier": 1.0,
    "eval_interval": 1,
    "eval_samples": 1,
    "reasoning_effort": "default",
}
METHOD_TYPES = ("supervised", "dpo", "reinforcement")


def base_models() -> tuple[str, ...]:
    """Models the sandbox accepts for fine-tuning: Tuneline's model table."""
    return tuple(MODELS)


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


class SandboxServerError(TunelineError):
    """An injected 500."""

    status = 500
    type = "server_error"
    code = "server_error"


class Sandbox:
    """The simulator; state lives in Redis (``SandboxStore``), bytes under ``data_dir/sandbox``.

    Fault options arrive already validated (``faults.SandboxFaultsSchema`` at the HTTP edge), so
    nothing here bounds or clamps them again.
    """

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        time_scale: float = 1.0,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.state = SandboxStore(store)
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
        self.state.hold(operation, 1)
        try:
            self.sleep(slow_ms / 1000.0)
        finally:
            self.state.hold(operation, -1)

    def account_faults(self) -> dict[str, Any]:
        """Faults that apply to the whole sandbox account (the per-job ones are in ``sandbox``)."""
        return {
            "object": "sandbox.faults",
            "upload_slow_ms": int(self.state.account_faults().get("upload_slow_ms", 0)),
        }

    def set_account_faults(self, upload_slow_ms: int) -> dict[str, Any]:
        self.state.set_account_faults({"upload_slow_ms": upload_slow_ms})
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
        self.state.save_file(record, self.clock.now() * 1000)
        return record

    def get_file(self, file_id: str) -> dict[str, Any]:
        return _public_file(self._file(file_id))

    def list_files(
        self,
        after: str | None,
        limit: int,
        purpose: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        keep = None if purpose is None else (lambda f: f["purpose"] == purpose)
        found, more = self.state.walk_files(after, limit, keep)
        return [_public_file(f) for f in found], more

    def file_content(self, file_id: str) -> bytes:
        record = self._file(file_id)
        if record.get("result_of"):
            job = self._load_job(record["result_of"])
            self._slow("files.content", int(job["sandbox"].get("slow_ms") or 0))
            return result_csv(job, timeline_of(job, self.scale))
        return (self.dir / file_id).read_bytes()

    def _file(self, file_id: str) -> dict[str, Any]:
        record = self.state.load_file(file_id)
        if record is None:
            raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
        return record

    # ---- jobs: create --------------------------------------------------------------------

    def create_job(
        self, body: Mapping[str, Any], faults: Faults | None = None, header_fault: str | None = None
    ) -> dict[str, Any]:
        """Validate like OpenAI, store the job, count it; injected create faults apply here.

        ``header_fault`` is one of ``faults.CREATE_HEADER_FAULTS`` (the ``X-Sandbox-Fault`` header).
        """
        faults = faults or Faults()
        if header_fault == "create-500":
            raise SandboxServerError(f"{TAG} Injected error before create (X-Sandbox-Fault: create-500).")
        if header_fault == "create-429":
            raise RateLimited(f"{TAG} Injected rate limit on create.", headers={"Retry-After": "1"})
        self._slow("jobs.create", faults.slow_ms)
        metadata = {str(k): str(v) for k, v in dict(body.get("metadata") or {}).items()}
        tuneline_job = metadata.get("tuneline_job_id")
        attempt = self.state.count_create_attempt(tuneline_job) if tuneline_job else 0
        per_job = faults.create_fault
        count = int(per_job["count"]) if per_job else 0
        # Without a Tuneline job id there is nothing to count against: every create fails.
        failing = count > 0 and (attempt == 0 or attempt <= count)
        if failing and per_job and per_job["when"] == "before":
            raise SandboxServerError(f"{TAG} Injected error before create (sandbox.create_fault).")
        job = self._new_job(body, faults, metadata)
        read_faults = {"rate_limit": faults.rate_limit_count, "server_errors": faults.server_errors}
        self.state.insert_job(job, tuneline_job, read_faults)
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
        training = self.state.load_file(str(body.get("training_file") or ""))
        if training is None or training["purpose"] != "fine-tune":
            raise InvalidRequest(
                f"invalid training_file: {body.get('training_file')}",
                param="training_file",
                code="invalid_training_file",
            )
        validation_id = body.get("validation_file")
        if validation_id:
            validation = self.state.load_file(str(validation_id))
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
            "seed": int(seed) if seed is not None else int(digest(job_id, "seed")[:7], 16),
            "metadata": metadata or None,
            "integrations": list(body.get("integrations") or []),  # echoed, as OpenAI does
            "sandbox": faults.as_dict(),
            "status": "validating_files",
            "training_bytes": int(training["bytes"]),
            "finished_at": None,
            "cancelled_at": None,
            "error": None,
            "paused_at": None,  # while paused: when (wall clock); the job's timeline stands still
            "paused_s": 0.0,  # time spent paused before now: the timeline runs that much later
        }

    # ---- jobs: read ----------------------------------------------------------------------

    def _load_job(self, job_id: str) -> dict[str, Any]:
        job = self.state.load_job(job_id)
        if job is None:
            raise NotFound(
                f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="fine_tune_not_found"
            )
        return job

    def _job_now(self, job: Mapping[str, Any]) -> float:
        """The job's own clock: wall time less the time it spent paused, stopped while paused."""
        return float(job.get("paused_at") or self.clock.now()) - float(job.get("paused_s") or 0.0)

    def _advance(self, job: dict[str, Any], now: float) -> dict[str, Any]:
        """The stored job moved to where its timeline says it is at ``now`` (the job's clock);
        terminal is sticky, and a paused job stays paused until resumed. The same object when it has
        not moved (``list_jobs`` relies on it)."""
        if job["status"] in TERMINAL or job["status"] == "paused":
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
            job = self._advance(stored, self._job_now(stored))
            if job == stored:
                return None
            if job["status"] == "succeeded":
                self._write_result_file(pipe, job)
            return job

        job = self.state.update_job(job_id, advance)
        return job if job is not None else self._load_job(job_id)

    def _write_result_file(self, pipe: Pipeline, job: dict[str, Any]) -> None:
        record = {
            "id": result_file_id(job["id"]),
            "object": "file",
            "bytes": len(result_csv(job, timeline_of(job, self.scale))),
            "created_at": job["finished_at"],
            "filename": RESULT_FILENAME,
            "purpose": "fine-tune-results",
            "status": "processed",
            "status_details": None,
            "expires_at": None,
            "result_of": job["id"],
        }
        self.state.queue_file(pipe, record, job["finished_at"] * 1000)

    def _apply_read_faults(self, job_id: str, operation: str) -> None:
        """Injected slowness, 429s and 500s for the next N reads of a job, in that order."""
        faults = self._load_job(job_id)["sandbox"]
        self._slow(operation, int(faults.get("slow_ms") or 0))
        if faults.get("rate_limit_count") and self.state.take_read_fault(job_id, "rate_limit"):
            retry_after = faults.get("retry_after", 1.0)
            raise RateLimited(
                f"{TAG} Injected rate limit; retry after {retry_after} s.",
                headers={"Retry-After": f"{retry_after:g}"},
            )
        if faults.get("server_errors") and self.state.take_read_fault(job_id, "server_errors"):
            raise SandboxServerError(f"{TAG} Injected server error.")

    def get_job(self, job_id: str) -> dict[str, Any]:
        self.state.record_job_read(self.clock.now(), "jobs.retrieve")
        self._apply_read_faults(job_id, "jobs.retrieve")
        return self.public_job(self._refresh(job_id))

    def list_jobs(
        self, after: str | None, limit: int, metadata: Mapping[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; ``metadata`` filters on exact key/value pairs (the provider's look-before-create)."""
        wanted = dict(metadata or {})
        if not wanted:
            # A poll's list (a metadata filter is a submit's look-before-create, not a poll).
            self.state.record_job_read(self.clock.now(), "jobs.list")

        def matches(job: dict[str, Any]) -> bool:
            meta = job.get("metadata") or {}
            return all(meta.get(k) == v for k, v in wanted.items())

        def load(job_id: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
            # A page is read at once; only a job whose status moved since it was stored takes
            # ``_refresh``'s write (the rest are what ``_refresh`` would answer without writing).
            if stored is None or self._advance(stored, self._job_now(stored)) is stored:
                return stored
            try:
                return self._refresh(job_id)
            except NotFound:
                return None

        def load_page(ids: list[str]) -> list[dict[str, Any] | None]:
            return [load(i, stored) for i, stored in zip(ids, self.state.load_jobs(ids), strict=True)]

        found, more = self.state.walk_jobs(after, limit, load_page, matches)
        return [self.public_job(j) for j in found], more

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel unless already terminal (then the job is returned unchanged)."""

        def cancel(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            at = self._job_now(stored)  # on the job's clock, as its events are
            job = self._advance(stored, at)
            if job["status"] not in TERMINAL:
                job = dict(job, status="cancelled", cancelled_at=at, finished_at=int(self.clock.now()))
            if job["status"] == "succeeded":
                self._write_result_file(pipe, job)
            return job

        job = self.state.update_job(job_id, cancel)
        return self.public_job(job if job is not None else self._load_job(job_id))

    def pause_job(self, job_id: str) -> dict[str, Any]:
        """Pause a running job: its timeline (steps, events, checkpoints) stops until resumed."""

        def pause(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            job = self._advance(stored, self._job_now(stored))
            if job["status"] != "running":
                raise _cannot(job, "paused", "running")
            return dict(job, status="paused", paused_at=self.clock.now())

        return self.public_job(self.state.update_job(job_id, pause) or self._load_job(job_id))

    def resume_job(self, job_id: str) -> dict[str, Any]:
        """Resume a paused job: its timeline goes on from where it stopped."""

        def resume(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            if stored["status"] != "paused":
                raise _cannot(self._advance(stored, self._job_now(stored)), "resumed", "paused")
            paused_s = float(stored.get("paused_s") or 0.0) + self.clock.now() - float(stored["paused_at"])
            return dict(stored, status="running", paused_at=None, paused_s=paused_s)

        return self.public_job(self.state.update_job(job_id, resume) or self._load_job(job_id))

    def public_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's ``fine_tuning.job`` object."""
        tl = timeline_of(job, self.scale)
        succeeded = job["status"] == "succeeded"
        paused_s = float(job.get("paused_s") or 0.0)
        running = job["status"] in ("queued", "running")
        estimated = int(job["created_at_f"] + paused_s + tl.end) if running else None
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
            "integrations": job.get("integrations") or [],
            "metadata": job["metadata"],
            "method": job["method"],
            "user_provided_suffix": job["suffix"],
            "terminal_at": terminal_at(job, tl),
        }

    # ---- events, checkpoints -------------------------------------------------------------

    def _visible_events(self, job: dict[str, Any]) -> list[tuple[str, Event]]:
        """(id, event) oldest first, up to now or the job's end, whichever is earlier."""
        tl = timeline_of(job, self.scale)
        elapsed = self._job_now(job) - job["created_at_f"]
        if job["cancelled_at"] is not None:
            elapsed = min(elapsed, job["cancelled_at"] - job["created_at_f"])
        events = [e for e in timeline_events(job, tl) if e.at <= elapsed]
        out = [(derived_id("ftevent-", job["id"], i), e) for i, e in enumerate(events)]
        if job["status"] == "cancelled":
            out.append(
                (
                    derived_id("ftevent-", job["id"], "cancelled"),
                    Event(job["cancelled_at"] - job["created_at_f"], "info", f"{TAG} Job cancelled."),
                )
            )
        return out

    def list_events(self, job_id: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        self.state.record_job_read(self.clock.now(), "jobs.events")
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
        self.state.record_job_read(self.clock.now(), "jobs.checkpoints")
        self._apply_read_faults(job_id, "jobs.checkpoints")
        job = self._refresh(job_id)
        tl = timeline_of(job, self.scale)
        reached = reached_step(job, tl, self._job_now(job))
        items = []
        for step in reversed(tl.checkpoint_steps):
            if step > reached:
                continue
            row = tl.metrics[step - 1]
            items.append(
                {
                    "id": derived_id("ftckpt-", job["id"], step),
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": int(job["created_at_f"] + tl.step_time(step)),
                    "fine_tuned_model_checkpoint": checkpoint_model(job, step),
                    "fine_tuning_job_id": job["id"],
                    "step_number": step,
                    "metrics": {k: v for k, v in row.items() if k != "total_steps"},
                }
            )
        return page_list(items, after, limit)

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
                if s <= reached_step(job, tl, self._job_now(job)) and checkpoint_model(job, s) == model
            ]
            if not steps:
                raise not_found
        return job

    def chat_completion(
        self,
        model: str,
        messages: list[Mapping[str, Any]],
        max_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> dict[str, Any]:
        training = self.dir / self._trained_model(model)["training_file"]
        return answers.chat_completion(training, model, messages, max_tokens, stop, int(self.clock.now()))

    def completion(
        self,
        model: str,
        prompt: str | list[str],
        max_tokens: int | None = None,
        stop: list[str] | None = None,
    ) -> dict[str, Any]:
        training = self.dir / self._trained_model(model)["training_file"]
        return answers.text_completion(training, model, prompt, max_tokens, stop, int(self.clock.now()))

    def stats(self) -> dict[str, Any]:
        """Create counters (tests prove exactly-once), recent job reads, calls held open."""
        return self.state.stats()


def _cannot(job: Mapping[str, Any], what: str, needed: str) -> Conflict:
    return Conflict(
        f"{TAG} Job {job['id']} is {job['status']}; only a {needed} job can be {what}.",
        code="invalid_job_status",
    )


def _public_file(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "result_of"}


def _resolve_hyperparameters(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, method) with ``auto`` resolved, as OpenAI reports them once validated."""
    method = dict(body.get("method") or {"type": "supervised"})
    method_type = method.get("type", "supervised")
    if method_type not in METHOD_TYPES:
        raise InvalidRequest(
            f"The sandbox does not simulate method {method_type!r}.",
            param="method.type",
            code="invalid_value",
        )
    inner = dict((method.get(method_type) or {}).get("hyperparameters") or {})
    given = {**dict(body.get("hyperparameters") or {}), **inner}
    param_root = f"method.{method_type}.hyperparameters" if inner else "hyperparameters"
    resolved: dict[str, Any] = {}
    for name, (low, high, default) in HYPERPARAMETERS.items():
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
    extra: dict[str, Any] = {k: v for k, v in given.items() if k not in HYPERPARAMETERS}
    if method_type == "dpo":
        extra.setdefault("beta", 0.1)
    detail = dict(method.get(method_type) or {})
    if method_type == "reinforcement":
        if not isinstance(detail.get("grader"), dict):
            raise InvalidRequest(
                "Missing required parameter: 'method.reinforcement.grader'.",
                param="method.reinforcement.grader",
                code="missing_required_parameter",
            )
        for name, default in REINFORCEMENT_DEFAULTS.items():
            if extra.get(name, "auto") in ("auto", None):
                extra[name] = default
    method[method_type] = {**detail, "hyperparameters": {**resolved, **extra}}
    method["type"] = method_type
    return resolved, method
