"""The ``evaluating`` stage: run the fine-tuned model (and a servable baseline: the model it started
from) over the held-out set; what the job's training method adds to the scores is its evaluator's
(``methods``).

Crash-safe like the other stages: the task takes the job id only; every answered example is
stored as it arrives, so a re-run (a redelivery, or the watchdog's re-enqueue after a killed
worker) resumes where the last one stopped; a live run holds a renewed lease, so the watchdog's
re-enqueues while it works return at once.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from service.core.backends.base import (
    BackendError,
    CompletionRequest,
    CompletionResult,
    ScoreRequest,
    ScoreResult,
)
from service.core.completions import CompletionsContext, can_serve_base, run_completion
from service.core.errors import TunelineError
from service.core.evaluation import methods, metrics
from service.core.evaluation.methods import SUPERVISED, Evaluator, Example
from service.core.jobs import lifecycle, record, retry, states
from service.core.jobs.record import Job
from service.core.jobs.stages.common import StageContext, guard_redelivery, run_stage
from service.core.store import evaluations
from service.core.store import jobs as repo
from service.core.webhooks.signing import EVENT_EVALUATED

log = logging.getLogger("tuneline.evaluation")

STAGE = "evaluating"
LEASE_S = 120.0
BATCH = 16  # examples per batch; the lease is renewed and the job re-checked between batches
MAX_TOKENS = 512  # the cap; each example asks for about twice its reference's length
ATTEMPTS = 4  # per example, for retryable provider errors
MAX_RETRY_WAIT_S = 30.0
TARGETS = ("model", "base")


def load_examples(
    path: Path, stop: str | None = None, evaluator: Evaluator = SUPERVISED, skip_invalid: bool = False
) -> list[Example]:
    """The prepared test split (rows of the format the job's method evaluates), in file order.

    ``skip_invalid``: pass over lines that are not JSON objects (a file as it was uploaded).
    """
    out: list[Example] = []
    with path.open(encoding="utf-8-sig") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                if skip_invalid:
                    continue
                raise
            example = evaluator.example(len(out), row, stop) if isinstance(row, dict) else None
            if example is not None:
                out.append(example)
    return out


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart, across threads."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        if start > now:
            time.sleep(start - now)


Ask = Callable[[CompletionRequest], CompletionResult]
_Result = TypeVar("_Result")


def _retrying(limiter: RateLimiter, call: Callable[[], _Result]) -> _Result:
    """``call()``, paced by ``limiter``, retrying retryable backend errors; the last error raises."""
    for attempt in range(ATTEMPTS):
        limiter.wait()
        try:
            return call()
        except BackendError as exc:
            if not (exc.retryable and attempt + 1 < ATTEMPTS):
                raise
            wait = exc.retry_after if exc.retry_after is not None else 2.0**attempt
            time.sleep(min(wait, MAX_RETRY_WAIT_S))
    raise AssertionError("unreachable")


def _answer(
    ask: Ask, limiter: RateLimiter, example: Example, stop: list[str] | None, evaluator: Evaluator
) -> dict[str, Any]:
    """One evaluated row; a failure after retries is recorded on the row, not raised."""
    request = CompletionRequest(
        model="",
        messages=example.messages,
        prompt=example.prompt,
        max_tokens=min(MAX_TOKENS, evaluator.max_tokens(example)),
        temperature=0.0,
        stop=stop,
    )
    row: dict[str, Any] = {
        "index": example.index,
        "prompt": example.shown,
        "reference": example.reference,
        **example.fields,
    }
    try:
        result = _retrying(limiter, lambda: ask(request))
    except (BackendError, TunelineError) as exc:
        return {**row, "answer": None, "error": {"code": exc.code, "message": exc.message}}
    scores = metrics.score(result.text, example.reference).as_dict() if evaluator.reference_metrics else {}
    return {**row, "answer": result.text, "finish_reason": result.finish_reason, **scores}


def summarize(rows: list[dict[str, Any]], evaluator: Evaluator = SUPERVISED) -> dict[str, Any]:
    """The summary of one target: metric means over answered rows, corpus BLEU, error count, and
    the figures of the job's method."""
    answered = [r for r in rows if r.get("answer") is not None]
    summary: dict[str, Any] = {
        "examples": len(rows),
        "answered": len(answered),
        "errors": len(rows) - len(answered),
    }
    if evaluator.reference_metrics:
        summary.update(metrics.summarize([(r["answer"], r["reference"]) for r in answered], answered))
    summary.update(evaluator.summarize(rows))
    return summary


def served_by(ctx: CompletionsContext, job: Job) -> Job:
    """The job whose model answers: the job itself, or the job that made the existing model an
    evaluate-only job evaluates (its backend serves that model)."""
    if not job.evaluated_job:
        return job
    source = record.load(ctx.store, job.evaluated_job)
    if source is None or source.model_deleted or source.fine_tuned_model != job.evaluated_model:
        raise BackendError(
            f"the model {job.evaluated_model} no longer exists", kind="permanent", code="model_not_found"
        )
    return source


def _run_target(
    ctx: CompletionsContext,
    job: Job,
    target: str,
    examples: list[Example],
    keep_going: Callable[[], bool],
    evaluator: Evaluator,
    scores: bool,
) -> dict[str, Any] | None:
    """Evaluate the examples not yet stored; None when the run was stopped (cancel, lost lease).

    ``scores``: the backend can score given replies for the method's per-row scores.
    """
    base = target == "base"
    limiter = RateLimiter(ctx.settings.eval_rate_per_s)
    served = served_by(ctx, job)
    model = served.fine_tuned_model or ""

    def ask(request: CompletionRequest) -> CompletionResult:
        return run_completion(ctx, served, replace(request, model=model), base=base)

    def score(request: ScoreRequest) -> ScoreResult:
        return _retrying(limiter, lambda: ctx.backends(served.provider).score(served, request, base))

    def evaluate(example: Example) -> dict[str, Any]:
        row = _answer(ask, limiter, example, stop, evaluator)
        return {**row, **evaluator.score(example, row, score if scores else None)}

    stop = [job.prepared_stop] if job.prepared_stop else None
    done = evaluations.rows(ctx.store, job.id, target)
    todo = [e for e in examples if e.index not in done]
    with ThreadPoolExecutor(max_workers=ctx.settings.eval_concurrency) as pool:
        for start in range(0, len(todo), BATCH):
            if not keep_going():
                return None
            batch = todo[start : start + BATCH]
            for row in pool.map(evaluate, batch):
                evaluations.put_row(ctx.store, job.id, target, row["index"], row)
    stored = evaluations.rows(ctx.store, job.id, target)
    return summarize([stored[i] for i in sorted(stored)], evaluator)


def run_evaluate(ctx: CompletionsContext, job_id: str, attempt: int = 0) -> None:
    """Evaluate the job's model on its test split, then mark it succeeded (and send ``evaluated``)."""
    job = record.load(ctx.store, job_id)
    if job is None or job.status in states.TERMINAL or job.stage != STAGE:
        return
    token = secrets.token_hex(8)
    if not evaluations.acquire_lease(ctx.store, job_id, STAGE, LEASE_S, token):
        return  # a live evaluator holds the job; this is the watchdog's or a duplicate's call
    try:
        # Deliveries are counted only once the lease is ours: the watchdog's calls during a live run
        # return above and are no sign of a crash.
        if not guard_redelivery(ctx.store, job_id, STAGE):
            return
        stage_ctx = StageContext(settings=ctx.settings, store=ctx.store, backends=ctx.backends)
        run_stage(stage_ctx, job, STAGE, lambda j: _evaluate(ctx, j, token), retry.STAGE, attempt)
    finally:
        evaluations.release_lease(ctx.store, job_id, STAGE, token)


def _evaluate(ctx: CompletionsContext, job: Job, token: str) -> None:
    job_id = job.id

    def keep_going() -> bool:
        current = repo.load(ctx.store, job_id)
        alive = current is not None and current["status"] == states.RUNNING and current["stage"] == STAGE
        return alive and evaluations.renew_lease(ctx.store, job_id, STAGE, LEASE_S, token)

    evaluator = methods.for_method(job.method).bind(ctx.settings, job)
    examples = load_examples(Path((job.prepared or {})["test"]), job.prepared_stop, evaluator)
    # An experiment evaluates one baseline per base model (evaluate_base on its first candidate).
    compare = job.evaluate_base or (evaluator.compares_base and job.experiment_id is None)
    targets = ["model"] + (["base"] if compare and can_serve_base(ctx, job) else [])
    scores = evaluator.needs_scores and ctx.backends(job.provider).scores_replies(job)
    lifecycle.record_event(
        ctx.store,
        job_id,
        f"Evaluating {job.evaluated_model or job.fine_tuned_model} on {len(examples)} held-out examples"
        + (f" (and the model it started from, {job.model})" if "base" in targets else ""),
    )
    if evaluator.needs_scores and not scores:
        lifecycle.record_event(
            ctx.store,
            job_id,
            f"Provider {job.provider} cannot score given replies by log-probability: "
            f"{', '.join(evaluator.summary_names)} will not be computed",
            level="warn",
        )
    summaries: dict[str, dict[str, Any]] = {}
    for target in targets:
        summary = _run_target(ctx, job, target, examples, keep_going, evaluator, scores)
        if summary is None:
            log.info("evaluation stopped", extra={"job_id": job_id})
            return
        summaries[target] = summary
    model = summaries["model"]
    status = "failed" if examples and model["answered"] == 0 else "completed"
    baseline = summaries.get("base")
    evaluation: dict[str, Any] = {
        "status": status,
        "examples": len(examples),
        "metrics": model,
        "baseline": baseline,
        "baseline_model": job.model if "base" in summaries else None,
    }
    generation = ("exact_match", "char_f1", "rouge_l", "bleu") if evaluator.reference_metrics else ()
    figures = (*generation, *evaluator.summary_names)
    message = (
        f"Evaluation {status}: {', '.join(f'{name} {model.get(name)}' for name in figures)} "
        f"over {model['answered']}/{len(examples)} examples"
    )
    if baseline:
        headline = (*generation[1:2], *evaluator.summary_names[:1])
        message += "; baseline " + ", ".join(f"{name} {baseline.get(name)}" for name in headline)
    lifecycle.try_transition(
        ctx.store,
        job_id,
        states.SUCCEEDED,
        "done",
        message,
        level="info" if status == "completed" else "warn",
        apply=lambda j: _set_evaluation(j, evaluation),
        also_webhooks=(EVENT_EVALUATED,),
    )


def _set_evaluation(job: Job, evaluation: dict[str, Any]) -> None:
    job.evaluation = evaluation
