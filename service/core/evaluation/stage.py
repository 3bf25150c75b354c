"""The ``evaluating`` stage: run the fine-tuned model (and a servable base) over the held-out set.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service.core.backends.base import BackendError, CompletionRequest, CompletionResult
from service.core.completions import CompletionsContext, can_serve_base, run_completion
from service.core.errors import TunelineError
from service.core.evaluation import metrics
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


@dataclass(frozen=True)
class Example:
    index: int
    messages: list[dict[str, Any]] | None
    prompt: str | None
    shown: str  # what a person reads as the question
    reference: str


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _example(index: int, row: dict[str, Any], stop: str | None) -> Example | None:
    if isinstance(row.get("messages"), list):
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
        if last < 1:
            return None
        asked = messages[:last]
        shown = next((_content(m) for m in reversed(asked) if m.get("role") == "user"), "")
        return Example(index, asked, None, shown, _content(messages[last]))
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        reference = row["completion"]
        if stop and reference.endswith(stop):
            reference = reference[: -len(stop)]
        return Example(index, None, row["prompt"], row["prompt"], reference.strip())
    return None


def load_examples(path: Path, stop: str | None = None, skip_invalid: bool = False) -> list[Example]:
    """The prepared test split (chat or prompt/completion rows), in file order.

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
            example = _example(len(out), row, stop) if isinstance(row, dict) else None
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


@dataclass(frozen=True)
class Scoring:
    """What a job's held-out rows are and how each answer is scored: against the reference
    (``REFERENCE``, the default) or, for a reinforcement job, by its grader
    (``service.core.evaluation.graded``)."""

    load: Callable[[Path, str | None], list[Example]]
    max_tokens: Callable[[Example], int]
    score: Callable[[str, Example], dict[str, Any]]
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]]
    headline: Callable[[dict[str, Any]], str]  # a summary's figures, for the job's event


def _reference_tokens(example: Example) -> int:
    # Room for an answer twice the reference's length (a CJK character is about one token or
    # less), so a model that never stops (an untrained base) cannot stall the evaluation.
    return 2 * len(example.reference) + 16


def _answer(
    ask: Ask, limiter: RateLimiter, example: Example, stop: list[str] | None, scoring: Scoring
) -> dict[str, Any]:
    """One evaluated row; a failure after retries is recorded on the row, not raised."""
    request = CompletionRequest(
        model="",
        messages=example.messages,
        prompt=example.prompt,
        max_tokens=min(MAX_TOKENS, scoring.max_tokens(example)),
        temperature=0.0,
        stop=stop,
    )
    row: dict[str, Any] = {"index": example.index, "prompt": example.shown, "reference": example.reference}
    for attempt in range(ATTEMPTS):
        limiter.wait()
        try:
            result = ask(request)
        except BackendError as exc:
            if exc.retryable and attempt + 1 < ATTEMPTS:
                time.sleep(
                    min(exc.retry_after if exc.retry_after is not None else 2.0**attempt, MAX_RETRY_WAIT_S)
                )
                continue
            return {**row, "answer": None, "error": {"code": exc.code, "message": exc.message}}
        except TunelineError as exc:
            return {**row, "answer": None, "error": {"code": exc.code, "message": exc.message}}
        scores = scoring.score(result.text, example)
        return {**row, "answer": result.text, "finish_reason": result.finish_reason, **scores}
    raise AssertionError("unreachable")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of one target: metric means over answered rows, corpus BLEU, error count."""
    answered = [r for r in rows if r.get("answer") is not None]
    summary: dict[str, Any] = {
        "examples": len(rows),
        "answered": len(answered),
        "errors": len(rows) - len(answered),
    }
    summary.update(metrics.summarize([(r["answer"], r["reference"]) for r in answered], answered))
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


REFERENCE = Scoring(
    load=lambda path, stop: load_examples(path, stop),
    max_tokens=_reference_tokens,
    score=lambda answer, example: metrics.score(answer, example.reference).as_dict(),
    summarize=summarize,
    headline=lambda summary: (
        f"exact_match {summary['exact_match']}, char_f1 {summary['char_f1']}, "
        f"rouge_l {summary['rouge_l']}, bleu {summary['bleu']}"
    ),
)


def scoring_for(ctx: CompletionsContext, job: Job) -> Scoring:
    from service.core.evaluation import graded  # it builds on this module

    return graded.scoring(ctx.settings, job) if graded.applies(job) else REFERENCE


def _run_target(
    ctx: CompletionsContext,
    job: Job,
    target: str,
    examples: list[Example],
    keep_going: Callable[[], bool],
    scoring: Scoring = REFERENCE,
) -> dict[str, Any] | None:
    """Evaluate the examples not yet stored; None when the run was stopped (cancel, lost lease)."""
    base = target == "base"
    served = served_by(ctx, job)
    model = served.fine_tuned_model or ""

    def ask(request: CompletionRequest) -> CompletionResult:
        return run_completion(ctx, served, replace(request, model=model), base=base)

    limiter = RateLimiter(ctx.settings.eval_rate_per_s)
    stop = [job.prepared_stop] if job.prepared_stop else None
    done = evaluations.rows(ctx.store, job.id, target)
    todo = [e for e in examples if e.index not in done]
    with ThreadPoolExecutor(max_workers=ctx.settings.eval_concurrency) as pool:
        for start in range(0, len(todo), BATCH):
            if not keep_going():
                return None
            batch = todo[start : start + BATCH]
            for row in pool.map(lambda e: _answer(ask, limiter, e, stop, scoring), batch):
                evaluations.put_row(ctx.store, job.id, target, row["index"], row)
    stored = evaluations.rows(ctx.store, job.id, target)
    return scoring.summarize([stored[i] for i in sorted(stored)])


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

    scoring = scoring_for(ctx, job)
    examples = scoring.load(Path((job.prepared or {})["test"]), job.prepared_stop)
    targets = ["model"] + (["base"] if job.evaluate_base and can_serve_base(ctx, job) else [])
    lifecycle.record_event(
        ctx.store,
        job_id,
        f"Evaluating {job.evaluated_model or job.fine_tuned_model} on {len(examples)} held-out examples"
        + (" (and its base model)" if "base" in targets else ""),
    )
    summaries: dict[str, dict[str, Any]] = {}
    for target in targets:
        summary = _run_target(ctx, job, target, examples, keep_going, scoring)
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
    message = (
        f"Evaluation {status}: {scoring.headline(model)} over {model['answered']}/{len(examples)} examples"
    )
    if baseline:
        message += f"; base model {scoring.headline(baseline)}"
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
