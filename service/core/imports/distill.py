"""Distillation (opt-in, DESIGN §15): the original fine-tuned model's answers to its own training
prompts, written as a new training file of the tenant and prepared like any other.

Bounded by the request's ``max_cost_usd`` twice: at the start, an upper bound (every prompt's
tokens, every answer at its cap, the model's usage prices) over the budget is refused; while it
runs, the spend counted from each answer's usage stops it before an answer could pass the budget.
Calls take tokens from the account's rate budget (shared with its imports and polls). It runs in
short task steps like an import; every answer is stored as it arrives, so a killed worker's step
resumes at the next unanswered prompt, and a job's file is written once, under an id derived from
(import, job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from service.core import files, tasknames
from service.core.auth import Principal
from service.core.backends.base import BackendError, CompletionRequest
from service.core.clock import Clock, SystemClock
from service.core.completions import CompletionsContext, run_completion
from service.core.datasets import resolve_model
from service.core.datasets.models import usage_cost_usd
from service.core.datasets.tokens import TokenCounter
from service.core.errors import Conflict, TunelineError, Unprocessable
from service.core.evaluation.stage import Example, load_examples
from service.core.imports.retrain import choose_jobs, finished_import, import_lock, original_not_served
from service.core.imports.usecases import DISTILL_FIELDS
from service.core.jobs import record, retry
from service.core.jobs.record import Job
from service.core.jobs.usecases import JobsContext
from service.core.store import imports as repo
from service.core.store import ratelimit
from service.core.store.base import Pipeline
from service.settings import Settings

log = logging.getLogger("tuneline.distill")

QUEUED, RUNNING, SUCCEEDED, STOPPED, FAILED = "queued", "running", "succeeded", "stopped", "failed"
TERMINAL = frozenset({SUCCEEDED, STOPPED, FAILED})
MAX_ANSWER_TOKENS = 1024
STEP_BUDGET_S = 60.0
LOCK_S = 30
BATCH = 8  # answers between two commits of the counters (each answer is stored at once)
FATAL_STATUSES = (401, 403, 404)  # a revoked key, a model gone: no other prompt can be answered


@dataclass
class DistillContext(CompletionsContext):
    clock: Clock = field(default_factory=SystemClock)
    jitter: Callable[[], float] = random.random
    sleep: Callable[[float], None] = time.sleep


def answer_cap(counter: TokenCounter, example: Example) -> int:
    """Room for an answer twice the training answer's length, within ``MAX_ANSWER_TOKENS``."""
    return min(MAX_ANSWER_TOKENS, 2 * counter.text(example.reference) + 16)


def prompt_tokens(counter: TokenCounter, example: Example) -> int:
    if example.messages is not None:
        return counter.messages(example.messages)
    return counter.text(example.prompt or "")


def _examples(settings: Settings, job: Job) -> list[Example]:
    """The training file's examples as imported (rows that are not examples are passed over)."""
    return load_examples(files.blob_path(settings.data_dir, job.training_file), skip_invalid=True)


def _bound(job: Job, examples: list[Example]) -> float:
    """The most answering every example can cost (each answer at its cap)."""
    counter = TokenCounter(resolve_model(job.model).encoding)
    return sum(usage_cost_usd(job.model, prompt_tokens(counter, e), answer_cap(counter, e)) for e in examples)


def _fingerprint(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def public_distill(import_id: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"object": "import.distill", "import_id": import_id, **{k: state[k] for k in DISTILL_FIELDS}}


def start_distill(
    ctx: JobsContext, principal: Principal, import_id: str, params: dict[str, Any]
) -> dict[str, Any]:
    """``POST /v1/imports/{id}/distill``: check, estimate, record, and start the task."""
    doc = finished_import(ctx.store, principal, import_id, "distill")
    max_cost = float(params["max_cost_usd"])
    wanted: list[str] | None = params.get("jobs")
    fingerprint = _fingerprint({"max_cost_usd": max_cost, "jobs": wanted})
    with import_lock(ctx.store, import_id):
        done = doc.get("distill")
        if done is not None:
            if done["fingerprint"] != fingerprint:
                raise Conflict(
                    f"Import {import_id} was already distilled with another request "
                    f"(status {done['status']}).",
                    param="import_id",
                    code="import_already_distilled",
                    headers={"x-should-retry": "false"},
                )
            return public_distill(import_id, done)
        refusal = original_not_served(ctx, doc)
        if refusal is not None:
            raise Unprocessable(
                f"The original fine-tuned models cannot answer here: {refusal.message}",
                param="import_id",
                code=refusal.code,
                headers={"x-should-retry": "false"},
            )
        chosen, skipped = choose_jobs(ctx.store, doc, wanted)
        entries: list[dict[str, Any]] = []
        estimate = 0.0
        for index, job in chosen:
            examples = _examples(ctx.settings, job)
            try:
                bound = _bound(job, examples)
            except (ValueError, KeyError):
                raise Unprocessable(
                    f"No usage price is known for base model {job.model!r} of imported job {job.id}.",
                    param=f"jobs.{index}" if index is not None else "import_id",
                    code="model_price_unknown",
                ) from None
            estimate += bound
            entries.append(
                {
                    "job_id": job.id,
                    "provider_job_id": job.provider_job_id,
                    "fine_tuned_model": job.fine_tuned_model,
                    "prompts": len(examples),
                    "answered": 0,
                    "errors": 0,
                    "file_id": None,
                    "complete": None,
                }
            )
        if estimate > max_cost:
            raise Unprocessable(
                f"Answering {sum(e['prompts'] for e in entries)} prompts may cost up to ${estimate:.4f} "
                f"(each answer at its cap of {MAX_ANSWER_TOKENS} tokens or twice the training answer), "
                f"over max_cost_usd ${max_cost:.4f}.",
                param="max_cost_usd",
                code="budget_exceeded",
                headers={"x-should-retry": "false"},
            )
        state = {
            "fingerprint": fingerprint,
            "status": QUEUED,
            "max_cost_usd": max_cost,
            "estimated_cost_usd": round(estimate, 6),
            "spent_usd": 0.0,
            "jobs": entries,
            "skipped": skipped,
            "error": None,
            "position": 0,
        }

        def keep(stored: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            stored["distill"] = state
            return stored

        repo.update(ctx.store, import_id, keep)
    ctx.dispatcher.enqueue(tasknames.IMPORT_DISTILL, import_id)
    return public_distill(import_id, state)


def distilled_file_id(import_id: str, job_id: str) -> str:
    return "file-" + hashlib.sha256(f"{import_id}|{job_id}|distilled".encode()).hexdigest()[:24]


def run_distill(ctx: DistillContext, import_id: str, attempt: int = 0) -> bool:
    """One step of a distillation; True when there is more to do (enqueue the task again).

    Raises ``retry.RetryLater`` when another worker holds the import or the provider said "later".
    """
    doc = repo.load(ctx.store, import_id)
    if doc is None or (doc.get("distill") or {}).get("status", SUCCEEDED) in TERMINAL:
        return False
    token = secrets.token_hex(8)
    if not repo.acquire_lock(ctx.store, import_id, token, LOCK_S):
        raise retry.RetryLater(LOCK_S / 3, "another worker is working on this import")
    try:
        return _Step(ctx, doc, token).run(attempt)
    finally:
        repo.release_lock(ctx.store, import_id, token)


class _Stop(Exception):
    """Ends the distillation early: ``status`` with ``error``."""

    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Step:
    def __init__(self, ctx: DistillContext, doc: dict[str, Any], token: str) -> None:
        self.ctx, self.doc, self.token = ctx, doc, token
        self.id: str = doc["id"]
        self.state: dict[str, Any] = doc["distill"]

    def run(self, attempt: int) -> bool:
        self.spent = 0.0
        try:
            self.account = self.ctx.backends(self.doc["source"]).account
        except TunelineError as exc:  # the provider was unconfigured since the start
            self._finish(FAILED, {"code": exc.code, "message": exc.message})
            return False
        if self.state["status"] == QUEUED:
            self._commit(lambda s: s.update(status=RUNNING))
        # Counted again from the stored answers: a killed step's answers are all in.
        self.spent = sum(
            row.get("cost_usd") or 0.0
            for entry in self.state["jobs"]
            for row in repo.distilled(self.ctx.store, self.id, entry["job_id"]).values()
        )
        deadline = self.ctx.clock.now() + min(STEP_BUDGET_S, self.ctx.settings.visibility_timeout_s / 2)
        try:
            while self.state["position"] < len(self.state["jobs"]):
                if not self._job(self.state["position"], deadline, attempt):
                    return True
            self._finish(SUCCEEDED, None)
        except _Stop as stop:
            self._write_partial()
            self._finish(stop.status, {"code": stop.code, "message": stop.message})
        return False

    # --- one job ------------------------------------------------------------------------------

    def _job(self, position: int, deadline: float, attempt: int) -> bool:
        """Answer the job's prompts; False when the step's time ran out first."""
        entry = self.state["jobs"][position]
        job = record.load(self.ctx.store, entry["job_id"])
        if job is None or not job.fine_tuned_model:
            raise _Stop(FAILED, "job_not_found", f"imported job {entry['job_id']} no longer exists")
        examples = _examples(self.ctx.settings, job)
        counter = TokenCounter(resolve_model(job.model).encoding)
        done = repo.distilled(self.ctx.store, self.id, job.id)
        todo = [e for e in examples if e.index not in done]
        for start in range(0, len(todo), BATCH):
            for example in todo[start : start + BATCH]:
                done[example.index] = self._answer(job, counter, example, attempt)
            self._count(position, done)
            if self.ctx.clock.now() >= deadline and start + BATCH < len(todo):
                return False
        self._write(position, job, examples, done, complete=True)
        self._commit(lambda s: s.update(position=position + 1))
        return True

    def _answer(self, job: Job, counter: TokenCounter, example: Example, attempt: int) -> dict[str, Any]:
        cap = answer_cap(counter, example)
        bound = usage_cost_usd(job.model, prompt_tokens(counter, example), cap)
        if self.spent + bound > self.state["max_cost_usd"]:
            raise _Stop(
                STOPPED,
                "budget_reached",
                f"${self.spent:.4f} spent; the next answer could pass max_cost_usd "
                f"${self.state['max_cost_usd']:.4f}",
            )
        request = CompletionRequest(
            model=job.fine_tuned_model or "",
            messages=example.messages,
            prompt=example.prompt,
            max_tokens=cap,
            temperature=0.0,
        )
        self._throttle()
        try:
            result = run_completion(self.ctx, job, request)
        except BackendError as exc:
            if exc.retryable:
                decision = retry.decide(retry.STAGE, exc, attempt, self.ctx.jitter())
                if decision.retry:
                    raise retry.RetryLater(decision.delay, decision.message) from exc
            if not exc.retryable and exc.status not in FATAL_STATUSES:
                row: dict[str, Any] = {
                    "answer": None,
                    "error": {"code": exc.code, "message": exc.message},
                    "cost_usd": 0.0,
                }
                repo.put_distilled(self.ctx.store, self.id, job.id, example.index, row)
                return row
            raise _Stop(FAILED, exc.code, f"{job.fine_tuned_model}: {exc.message}") from exc
        except TunelineError as exc:
            raise _Stop(FAILED, exc.code, exc.message) from exc
        cost = usage_cost_usd(job.model, result.prompt_tokens, result.completion_tokens)
        self.spent += cost
        row = {"answer": result.text, "finish_reason": result.finish_reason, "cost_usd": cost}
        repo.put_distilled(self.ctx.store, self.id, job.id, example.index, row)
        return row

    def _throttle(self) -> None:
        settings = self.ctx.settings
        ratelimit.wait_for(
            self.ctx.store,
            self.account,
            settings.poll_rate_per_s,
            settings.poll_burst,
            self.ctx.clock.now,
            self.ctx.sleep,
        )

    # --- the file -----------------------------------------------------------------------------

    def _write(
        self,
        position: int,
        job: Job,
        examples: list[Example],
        rows: dict[int, dict[str, Any]],
        complete: bool,
    ) -> None:
        """The prompts with the original model's answers, as a new file of the tenant (once)."""
        entry = self.state["jobs"][position]
        if entry.get("file_id"):
            return
        lines = [
            _line(e, rows[e.index]["answer"]) for e in examples if (rows.get(e.index) or {}).get("answer")
        ]
        if not lines:
            return
        payload = "".join(lines).encode()
        file_id = distilled_file_id(self.id, job.id)
        path = files.blob_path(self.ctx.settings.data_dir, file_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)  # bytes first, then the record (an orphan blob is swept)
        made = files.FileRecord(
            id=file_id,
            tenant=self.doc["tenant"],
            bytes=len(payload),
            created_at=int(self.ctx.clock.now()),
            filename=f"distilled-{job.provider_job_id or job.id}.jsonl",
            purpose="fine-tune",
            sha256=hashlib.sha256(payload).hexdigest(),
            import_id=self.id,
        )

        def edit(state: dict[str, Any]) -> None:
            state["jobs"][position].update(file_id=file_id, complete=complete)

        self._commit(
            edit, lambda pipe: repo.queue_file_record(pipe, asdict(made), self.ctx.clock.now() * 1000)
        )
        self.ctx.dispatcher.enqueue(tasknames.PREPARE_FILE, file_id)
        log.info("distilled file written", extra={"import_id": self.id, "job_id": job.id, "file_id": file_id})

    def _write_partial(self) -> None:
        """On a stop, the job in progress keeps what was answered (``complete: false``)."""
        position = self.state["position"]
        if position >= len(self.state["jobs"]):
            return
        job = record.load(self.ctx.store, self.state["jobs"][position]["job_id"])
        if job is None:
            return
        rows = repo.distilled(self.ctx.store, self.id, job.id)
        self._count(position, rows)
        self._write(position, job, _examples(self.ctx.settings, job), rows, complete=False)

    # --- commits ------------------------------------------------------------------------------

    def _count(self, position: int, rows: dict[int, dict[str, Any]]) -> None:
        answered = sum(1 for r in rows.values() if r.get("answer") is not None)
        spent = round(self.spent, 6)

        def edit(state: dict[str, Any]) -> None:
            state["jobs"][position].update(answered=answered, errors=len(rows) - answered)
            state["spent_usd"] = spent

        self._commit(edit)
        repo.extend_lock(self.ctx.store, self.id, self.token, LOCK_S)

    def _commit(
        self, edit: Callable[[dict[str, Any]], None], queue: Callable[[Pipeline], None] | None = None
    ) -> None:
        def change(doc: dict[str, Any], pipe: Pipeline) -> dict[str, Any]:
            edit(doc["distill"])
            if queue is not None:
                queue(pipe)
            return doc

        stored = repo.update(self.ctx.store, self.id, change)
        if stored is not None:
            self.doc, self.state = stored, stored["distill"]

    def _finish(self, status: str, error: dict[str, Any] | None) -> None:
        spent = round(self.spent, 6)
        self._commit(lambda s: s.update(status=status, error=error, spent_usd=spent))
        log.info("distillation ended", extra={"import_id": self.id, "status": status})


def _line(example: Example, answer: str) -> str:
    """One training row in the file's own format: the prompt, and the original model's answer."""
    if example.messages is not None:
        row: dict[str, Any] = {"messages": [*example.messages, {"role": "assistant", "content": answer}]}
    else:
        row = {"prompt": example.prompt, "completion": answer}
    return json.dumps(row, ensure_ascii=False) + "\n"
