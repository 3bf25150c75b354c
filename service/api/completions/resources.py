"""``POST /v1/chat/completions`` and ``POST /v1/completions`` for the tenant's fine-tuned models."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app
from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, principal, services
from service.api.completions.schemas import ChatCompletionCreateSchema, CompletionCreateSchema
from service.api.openai_objects import CompletionSchema
from service.api.ops import prometheus
from service.api.streaming import completion_response, sse
from service.core import completions
from service.core.completions import CompletionsContext, LiveCompletion

blp = Blueprint(
    "completions",
    __name__,
    url_prefix="/v1",
    description="Use fine-tuned models (OpenAI-compatible; `stream: true` answers with SSE chunks).",
)


def context() -> CompletionsContext:
    svc = services()
    return CompletionsContext(
        settings=svc.settings,
        store=svc.store,
        dispatcher=svc.dispatcher,
        backends=svc.backends,
    )


def live(started: float, completion: LiveCompletion) -> Any:
    """Send the chunks as they come; the first piece has arrived (time to first token)."""
    prometheus.observe_first_token(current_app, completion.provider, time.monotonic() - started)
    return sse(completion.chunks)


STREAM_DOC = {"description": "With stream=true: chunks as SSE, then `data: [DONE]`", "success": True}


@blp.route("/chat/completions")
class ChatCompletions(MethodView):
    @blp.arguments(ChatCompletionCreateSchema, example=examples.CHAT_COMPLETION_CREATE)
    @blp.response(200, CompletionSchema, example=examples.CHAT_COMPLETION)
    @blp.alt_response(200, content_type="text/event-stream", **STREAM_DOC)
    def post(self, body: dict[str, Any]) -> Any:
        """Chat with one of your fine-tuned models."""
        if body.get("stream"):
            started = time.monotonic()
            return live(started, completions.stream_chat_completion(context(), principal(), body))
        return completion_response(completions.chat_completion(context(), principal(), body), body)


@blp.route("/completions")
class Completions(MethodView):
    @blp.arguments(CompletionCreateSchema, example=examples.COMPLETION_CREATE)
    @blp.response(200, CompletionSchema, example=examples.COMPLETION)
    @blp.alt_response(200, content_type="text/event-stream", **STREAM_DOC)
    def post(self, body: dict[str, Any]) -> Any:
        """Complete a prompt with one of your fine-tuned models."""
        if body.get("stream"):
            started = time.monotonic()
            streamed = completions.stream_text_completion(context(), principal(), body)
            if streamed is not None:
                return live(started, streamed)
        return completion_response(completions.text_completion(context(), principal(), body), body)
