"""Completions from locally trained models: the API side waits, an ``infer`` worker generates.

The caller never imports torch: it parks the request body in a Redis key with a TTL, enqueues
``tuneline.infer.complete`` with the request id only, and blocks on a per-request result list.
The worker takes the body (once), runs the engine's ``generate`` and pushes one answer; for a
streamed request it runs ``generate_stream`` and pushes ``{"delta": text}`` messages as the
tokens come, then the same final answer. Scoring (``tuneline.infer.score``: log-probabilities of
given replies, for the held-out preference evaluation) goes the same way.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from service.core import tasknames
from service.core.backends.base import CompletionRequest, CompletionResult, ScoreRequest, ScoreResult
from service.core.dispatch import Dispatcher
from service.core.errors import TunelineError, Unprocessable
from service.core.jobs import states
from service.core.jobs.record import Job
from service.core.store import Store
from service.core.store import training as handoff

log = logging.getLogger("tuneline.inference")

WAIT_CHUNK_S = 10.0  # each BLPOP stays well inside the Redis client's socket timeout
RESULT_TTL_S = 60  # an answer nobody collects disappears

# service.training.inference.generate(model_dir_or_base, messages=, prompt=, max_tokens=,
# temperature=, stop=) -> (text, finish_reason, prompt_tokens, completion_tokens)
Generate = Callable[..., tuple[str, str, int, int]]
# service.training.inference.generate_stream(same arguments) -> CompletionStream: iterated, text
# pieces; then finish_reason, prompt_tokens and completion_tokens are set.
Stream = Callable[..., Any]
# service.training.preference.score_replies(model_dir_or_base, messages, replies)
# -> (logprobs, tokens), one of each per reply
Score = Callable[..., tuple[list[float], list[int]]]


class InferenceTimeout(TunelineError):
    """504: no inference worker answered in time (none running, or all busy)."""

    status = 504
    type = "server_error"
    code = "inference_timeout"


class InferenceFailed(TunelineError):
    status = 500
    type = "server_error"
    code = "inference_failed"


def _park(
    store: Store,
    dispatcher: Dispatcher,
    job: Job,
    model: str,
    model_dir: str | None,
    body: dict[str, Any],
    task: str,
    timeout_s: float,
) -> str:
    """Park a request body for an infer worker and enqueue ``task``; its request id."""
    # A model is served once trained: from the held-out evaluation (stage evaluating) on.
    servable = job.status == states.SUCCEEDED or job.stage == "evaluating"
    if not servable or not model_dir:
        raise Unprocessable(
            f"Model {model} is not ready: its job {job.id} is {job.status}.",
            param="model",
            code="model_not_ready",
        )
    request_id = "infreq-" + secrets.token_hex(12)
    handoff.put_request(
        store, request_id, {"job_id": job.id, "model_dir": model_dir, **body}, ttl_s=math.ceil(timeout_s)
    )
    dispatcher.enqueue(task, request_id)
    return request_id


def _submit(
    store: Store,
    dispatcher: Dispatcher,
    job: Job,
    model_dir: str | None,
    request: CompletionRequest,
    timeout_s: float,
    stream: bool,
) -> str:
    body = {
        "messages": request.messages,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "stop": request.stop,
        "stream": stream,
    }
    return _park(store, dispatcher, job, request.model, model_dir, body, tasknames.INFER_COMPLETE, timeout_s)


def _next(store: Store, request_id: str, timeout_s: float) -> dict[str, Any]:
    """The worker's next message for the request; raises when none came or it is an error."""
    message = _wait(store, request_id, timeout_s)
    if message is None:
        handoff.drop_request(store, request_id)  # a worker that picks it up later finds nothing to do
        raise InferenceTimeout(
            f"No inference worker answered within {timeout_s:g}s (is a worker on the 'infer' queue running?)."
        )
    if "error" in message:
        error = message["error"]
        raise InferenceFailed(str(error.get("message") or "inference failed"), code=error.get("code"))
    return message


def _result(message: dict[str, Any]) -> CompletionResult:
    return CompletionResult(
        text=message["text"],
        finish_reason=message["finish_reason"],
        prompt_tokens=int(message["prompt_tokens"]),
        completion_tokens=int(message["completion_tokens"]),
    )


def request_completion(
    store: Store,
    dispatcher: Dispatcher,
    job: Job,
    model_dir: str | None,
    request: CompletionRequest,
    timeout_s: float,
) -> CompletionResult:
    """Run one completion on ``model_dir`` (what ``job`` trained, or its base); blocks up to ``timeout_s``."""
    request_id = _submit(store, dispatcher, job, model_dir, request, timeout_s, stream=False)
    return _result(_next(store, request_id, timeout_s))


def stream_completion(
    store: Store,
    dispatcher: Dispatcher,
    job: Job,
    model_dir: str | None,
    request: CompletionRequest,
    timeout_s: float,
) -> Iterator[str | CompletionResult]:
    """``request_completion`` token by token: text pieces as the worker pushes them (each within
    ``timeout_s`` of the one before), then the ``CompletionResult``. Checks run at the first ``next``."""
    request_id = _submit(store, dispatcher, job, model_dir, request, timeout_s, stream=True)
    try:
        while "delta" in (message := _next(store, request_id, timeout_s)):
            yield str(message["delta"])
        yield _result(message)
    finally:
        # A reader that left early: nothing more is read; the worker's pushes expire with the list.
        handoff.drop_request(store, request_id)


def request_scores(
    store: Store,
    dispatcher: Dispatcher,
    job: Job,
    model_dir: str | None,
    request: ScoreRequest,
    timeout_s: float,
) -> ScoreResult:
    """Log-probabilities of the request's replies under ``model_dir``; blocks up to ``timeout_s``."""
    body = {"messages": request.messages, "replies": request.replies}
    model = job.fine_tuned_model or job.model
    request_id = _park(store, dispatcher, job, model, model_dir, body, tasknames.INFER_SCORE, timeout_s)
    message = _next(store, request_id, timeout_s)
    return ScoreResult(
        logprobs=[float(x) for x in message["logprobs"]], tokens=[int(x) for x in message["tokens"]]
    )


def _wait(store: Store, request_id: str, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        result = handoff.wait_result(store, request_id, min(left, WAIT_CHUNK_S))
        if result is not None:
            return result
    return None


def serve_completion(store: Store, request_id: str, generate: Generate, stream: Stream | None = None) -> bool:
    """Answer one parked request; False when its caller already gave up. Never raises on bad input.

    A streamed request (``stream`` given) gets one ``{"delta": text}`` message per piece as the
    model produces it, then the final message (the whole text and the token counts).
    """
    body = handoff.take_request(store, request_id)
    if body is None:
        return False
    started = time.monotonic()
    args = (body["model_dir"],)
    kwargs = {
        "messages": body.get("messages"),
        "prompt": body.get("prompt"),
        "max_tokens": int(body.get("max_tokens") or 256),
        "temperature": float(body.get("temperature") or 0.0),
        "stop": body.get("stop"),
    }
    first_s: float | None = None
    try:
        if body.get("stream") and stream is not None:
            pieces: list[str] = []
            chunks = stream(*args, **kwargs)
            for piece in chunks:
                if first_s is None:
                    first_s = time.monotonic() - started
                pieces.append(piece)
                handoff.push_result(store, request_id, {"delta": piece}, RESULT_TTL_S)
            text = "".join(pieces)
            finish_reason, prompt_tokens, completion_tokens = (
                str(chunks.finish_reason),
                int(chunks.prompt_tokens),
                int(chunks.completion_tokens),
            )
        else:
            text, finish_reason, prompt_tokens, completion_tokens = generate(*args, **kwargs)
        result: dict[str, Any] = {
            "text": text,
            "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        }
    except Exception as exc:  # the caller gets the failure; the worker keeps serving
        log.warning(
            "completion failed",
            extra={"job_id": body.get("job_id"), "error": type(exc).__name__},
            exc_info=False,
        )
        result = {
            "error": {"code": getattr(exc, "code", None) or "inference_failed", "message": str(exc)[:500]}
        }
    handoff.push_result(store, request_id, result, RESULT_TTL_S)
    extra: dict[str, Any] = {"job_id": body.get("job_id"), "ms": int((time.monotonic() - started) * 1000)}
    if first_s is not None:
        extra["first_token_ms"] = int(first_s * 1000)
    log.info("completion served", extra=extra)
    return True


def serve_scores(store: Store, request_id: str, score: Score) -> bool:
    """Answer one parked scoring request; False when its caller already gave up. Never raises on
    bad input: a malformed row or a model that cannot load is the answer's error."""
    body = handoff.take_request(store, request_id)
    if body is None:
        return False
    started = time.monotonic()
    try:
        logprobs, tokens = score(body["model_dir"], body.get("messages"), list(body.get("replies") or []))
        result: dict[str, Any] = {"logprobs": logprobs, "tokens": tokens}
    except Exception as exc:  # the caller gets the failure; the worker keeps serving
        log.warning("scoring failed", extra={"job_id": body.get("job_id"), "error": type(exc).__name__})
        result = {
            "error": {"code": getattr(exc, "code", None) or "inference_failed", "message": str(exc)[:500]}
        }
    handoff.push_result(store, request_id, result, RESULT_TTL_S)
    log.info(
        "replies scored",
        extra={"job_id": body.get("job_id"), "ms": int((time.monotonic() - started) * 1000)},
    )
    return True
