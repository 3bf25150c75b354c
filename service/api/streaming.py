"""OpenAI-style streaming: completion chunks as server-sent events ending with ``data: [DONE]``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response

from service.core import openai_shapes


def _events(chunks: Iterable[dict[str, Any]]) -> Iterator[str]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def completion_response(completion: dict[str, Any], body: dict[str, Any]) -> Any:
    """The completion as JSON, or as SSE chunks when the request asked ``stream: true``."""
    if not body.get("stream"):
        return completion
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return Response(
        _events(openai_shapes.stream_chunks(completion, include_usage)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
