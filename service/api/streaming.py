"""OpenAI-style streaming: completion chunks as server-sent events ending with ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response

from service.core import openai_shapes
from service.core.errors import TunelineError

log = logging.getLogger("tuneline.api.streaming")


def _events(chunks: Iterable[dict[str, Any]]) -> Iterator[str]:
    try:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    except TunelineError as exc:  # after the first chunk the status is sent: the error is an event
        log.warning("stream failed", extra={"code": exc.code})
        yield f"data: {json.dumps(exc.envelope(), ensure_ascii=False)}\n\n"
        return
    yield "data: [DONE]\n\n"


def sse(chunks: Iterable[dict[str, Any]]) -> Any:
    """Chunks as server-sent events, each sent as soon as it is produced."""
    return Response(
        _events(chunks),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def completion_response(completion: dict[str, Any], body: dict[str, Any]) -> Any:
    """The completion as JSON, or as SSE chunks when the request asked ``stream: true``."""
    if not body.get("stream"):
        return completion
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return sse(openai_shapes.stream_chunks(completion, include_usage))
