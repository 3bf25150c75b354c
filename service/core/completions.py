"""Completions for fine-tuned models, routed to the provider that trained them (DESIGN §3, §6)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from service.core import finetuned_models, openai_shapes
from service.core.auth import Principal
from service.core.backends.base import Backend, BackendError, CompletionRequest, CompletionResult
from service.core.backends.errors import api_error
from service.core.dispatch import Dispatcher
from service.core.errors import InvalidRequest
from service.core.jobs.record import Job
from service.core.store import Store
from service.settings import Settings

DEFAULT_MAX_TOKENS = 512


@dataclass
class CompletionsContext:
    settings: Settings
    store: Store
    dispatcher: Dispatcher
    backends: Callable[[str], Backend]


def run_completion(
    ctx: CompletionsContext, job: Job, request: CompletionRequest, base: bool = False
) -> CompletionResult:
    """Ask the job's backend; ``base`` asks the untuned base model (where the backend serves it).

    Raises BackendError (classified, for callers that retry) or a TunelineError.
    """
    return ctx.backends(job.provider).complete(job, request, base)


def can_serve_base(ctx: CompletionsContext, job: Job) -> bool:
    """Whether the untuned base model of ``job`` can be evaluated as a baseline."""
    return ctx.backends(job.provider).serves_base(job)


def _stop(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or len(items) > 4 or not all(isinstance(s, str) and s for s in items):
        raise InvalidRequest("stop must be a string or up to 4 non-empty strings.", param="stop")
    return list(items)


def _request(
    body: dict[str, Any], messages: list[dict[str, Any]] | None, prompt: str | None, step: int | None
) -> CompletionRequest:
    if int(body.get("n") or 1) != 1:
        raise InvalidRequest("Only n=1 is supported.", param="n", code="unsupported_value")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    return CompletionRequest(
        model=body["model"],
        messages=messages,
        prompt=prompt,
        max_tokens=int(max_tokens),
        temperature=1.0 if temperature is None else float(temperature),  # OpenAI's default
        stop=_stop(body.get("stop")),
        step=step,
    )


def _ask(ctx: CompletionsContext, job: Job, request: CompletionRequest) -> CompletionResult:
    try:
        return run_completion(ctx, job, request)
    except BackendError as exc:
        raise api_error(exc, request.model) from exc


def chat_completion(ctx: CompletionsContext, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/chat/completions`` for one of the tenant's fine-tuned models."""
    job, step = finetuned_models.resolve_checkpoint(ctx.store, principal, body["model"])
    result = _ask(ctx, job, _request(body, body["messages"], None, step))
    return openai_shapes.chat_completion(
        body["model"],
        result.text,
        result.finish_reason,
        (result.prompt_tokens, result.completion_tokens),
        int(time.time()),
    )


def text_completion(ctx: CompletionsContext, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/completions``: one choice per prompt (a string or a list of strings)."""
    job, step = finetuned_models.resolve_checkpoint(ctx.store, principal, body["model"])
    raw = body["prompt"]
    prompts = [raw] if isinstance(raw, str) else raw
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidRequest("prompt must be a string or a non-empty list of strings.", param="prompt")
    answers: list[tuple[str, str]] = []
    used = [0, 0]
    for prompt in prompts:
        result = _ask(ctx, job, _request(body, None, prompt, step))
        answers.append((result.text, result.finish_reason))
        used[0] += result.prompt_tokens
        used[1] += result.completion_tokens
    return openai_shapes.text_completion(body["model"], answers, (used[0], used[1]), int(time.time()))


@dataclass
class LiveCompletion:
    """A completion streamed while it is generated: OpenAI's chunks, and who generates them."""

    provider: str
    chunks: Iterator[dict[str, Any]]


def _pull(items: Iterator[str | CompletionResult], model: str) -> str | CompletionResult:
    try:
        return next(items)
    except BackendError as exc:
        raise api_error(exc, model) from exc


def _live(
    ctx: CompletionsContext, job: Job, request: CompletionRequest, body: dict[str, Any], chat: bool
) -> LiveCompletion:
    """Start the answer and wait for its first piece here, so that a refusal (model not ready, no
    worker) is an ordinary error answer rather than a broken stream."""
    items = ctx.backends(job.provider).stream(job, request)
    first = _pull(items, request.model)
    ended: list[CompletionResult] = []

    def pieces() -> Iterator[str]:
        item = first
        while not isinstance(item, CompletionResult):
            yield item
            item = _pull(items, request.model)
        ended.append(item)

    def ending() -> tuple[str, tuple[int, int]]:
        result = ended[0]
        return result.finish_reason, (result.prompt_tokens, result.completion_tokens)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    chunks = openai_shapes.live_chunks(chat, body["model"], int(time.time()), pieces(), ending, include_usage)
    return LiveCompletion(job.provider, chunks)


def stream_chat_completion(
    ctx: CompletionsContext, principal: Principal, body: dict[str, Any]
) -> LiveCompletion:
    """``POST /v1/chat/completions`` with ``stream: true``: chunks as the model produces them."""
    job, step = finetuned_models.resolve_checkpoint(ctx.store, principal, body["model"])
    return _live(ctx, job, _request(body, body["messages"], None, step), body, chat=True)


def stream_text_completion(
    ctx: CompletionsContext, principal: Principal, body: dict[str, Any]
) -> LiveCompletion | None:
    """``POST /v1/completions`` with ``stream: true`` for one prompt; None for a list of several
    (answered whole, then sent as chunks, one choice after another)."""
    raw = body["prompt"]
    prompt = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
    if not isinstance(prompt, str):
        return None
    job, step = finetuned_models.resolve_checkpoint(ctx.store, principal, body["model"])
    return _live(ctx, job, _request(body, None, prompt, step), body, chat=False)
