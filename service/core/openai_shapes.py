"""OpenAI's completion objects (chat and text, whole and streamed), built from plain answers."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

STREAM_PIECE_CHARS = 8  # a streamed answer arrives in pieces of about this many characters


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _completion(
    object_: str,
    id_prefix: str,
    model: str,
    choices: list[dict[str, Any]],
    tokens: tuple[int, int],
    created: int,
    id_: str | None,
    fingerprint: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id_ or id_prefix + secrets.token_hex(12),
        "object": object_,
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(*tokens),
    }
    if fingerprint:
        body["system_fingerprint"] = fingerprint
    return body


def chat_completion(
    model: str,
    answer: str,
    finish_reason: str,
    tokens: tuple[int, int],
    created: int,
    *,
    id_: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` with one choice."""
    choice = {
        "index": 0,
        "finish_reason": finish_reason,
        "logprobs": None,
        "message": {"role": "assistant", "content": answer, "refusal": None},
    }
    return _completion("chat.completion", "chatcmpl-", model, [choice], tokens, created, id_, fingerprint)


def text_completion(
    model: str,
    answers: list[tuple[str, str]],
    tokens: tuple[int, int],
    created: int,
    *,
    id_: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """A ``text_completion`` with one choice per (text, finish_reason)."""
    choices = [
        {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
        for i, (text, finish) in enumerate(answers)
    ]
    return _completion("text_completion", "cmpl-", model, choices, tokens, created, id_, fingerprint)


def _pieces(text: str) -> list[str]:
    return [text[i : i + STREAM_PIECE_CHARS] for i in range(0, len(text), STREAM_PIECE_CHARS)] or [""]


def stream_chunks(completion: dict[str, Any], include_usage: bool = False) -> Iterator[dict[str, Any]]:
    """The chunks OpenAI streams for ``completion`` (a whole chat or text completion object).

    Chat: a first delta with the role, content deltas, then a delta-less chunk with the finish
    reason; text: text pieces, the last one with the finish reason. With ``include_usage`` a last
    chunk carries the usage and no choices (``stream_options.include_usage``).
    """
    chat = completion["object"] == "chat.completion"
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": completion["created"],
        "model": completion["model"],
    }
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]
    for choice in completion["choices"]:
        index = choice["index"]
        if chat:
            yield {
                **base,
                "choices": [
                    {"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            }
            for piece in _pieces(choice["message"]["content"] or ""):
                yield {
                    **base,
                    "choices": [{"index": index, "delta": {"content": piece}, "finish_reason": None}],
                }
            yield {
                **base,
                "choices": [{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}],
            }
        else:
            pieces = _pieces(choice["text"])
            for n, piece in enumerate(pieces):
                last = n == len(pieces) - 1
                yield {
                    **base,
                    "choices": [
                        {
                            "index": index,
                            "text": piece,
                            "finish_reason": choice["finish_reason"] if last else None,
                            "logprobs": None,
                        }
                    ],
                }
    if include_usage:
        yield {**base, "choices": [], "usage": completion["usage"]}


def live_chunks(
    chat: bool,
    model: str,
    created: int,
    pieces: Iterator[str],
    ending: Callable[[], tuple[str, tuple[int, int]]],
    include_usage: bool = False,
) -> Iterator[dict[str, Any]]:
    """The chunks OpenAI streams for one choice generated while it is sent: a chunk per text piece
    as it comes, then one with the finish reason (and usage) from ``ending()``, called once the
    pieces are exhausted: ``(finish_reason, (prompt_tokens, completion_tokens))``."""
    base = {
        "id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
    }

    def choice(piece: str | None, finish_reason: str | None) -> dict[str, Any]:
        if chat:
            delta = {} if piece is None else {"content": piece}
            return {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {"index": 0, "text": piece or "", "finish_reason": finish_reason, "logprobs": None}

    if chat:
        yield {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    for piece in pieces:
        yield {**base, "choices": [choice(piece, None)]}
    finish_reason, tokens = ending()
    yield {**base, "choices": [choice(None, finish_reason)]}
    if include_usage:
        yield {**base, "choices": [], "usage": usage(*tokens)}
