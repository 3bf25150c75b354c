"""What a sandbox-trained model answers: its training answer to a prompt it saw, else a canned one."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.core import openai_shapes
from service.core.errors import InvalidRequest
from service.sandbox.timeline import ORGANIZATION, TAG, derived_id

CHARS_PER_TOKEN = 4


def chat_completion(
    training: Path,
    model: str,
    messages: list[Mapping[str, Any]],
    max_tokens: int | None,
    stop: list[str] | None,
    now: int,
) -> dict[str, Any]:
    """A chat answer: the training answer when the last user message matches one exactly."""
    prompt = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    answer, finish = _answer(training, model, prompt, max_tokens, stop)
    return openai_shapes.chat_completion(
        model,
        answer,
        finish,
        _tokens(" ".join(_text(m.get("content")) for m in messages), answer),
        now,
        id_=derived_id("chatcmpl-sandbox-", model, prompt),
        fingerprint=ORGANIZATION,
    )


def text_completion(
    training: Path,
    model: str,
    prompt: str | list[str],
    max_tokens: int | None,
    stop: list[str] | None,
    now: int,
) -> dict[str, Any]:
    """A text completion, one choice a prompt."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, list) else []
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidRequest(
            "prompt must be a string or a non-empty list of strings.",
            param="prompt",
            code="invalid_value",
        )
    answers = [_answer(training, model, p, max_tokens, stop) for p in prompts]
    return openai_shapes.text_completion(
        model,
        answers,
        _tokens(" ".join(prompts), " ".join(text for text, _ in answers)),
        now,
        id_=derived_id("cmpl-sandbox-", model, *prompts),
        fingerprint=ORGANIZATION,
    )


def _answer(
    training: Path, model: str, prompt: str, max_tokens: int | None, stop: list[str] | None
) -> tuple[str, str]:
    """(text, finish_reason), cut at a stop sequence or at ``max_tokens``."""
    known = _training_answers(training).get(prompt.strip())
    text = known if known is not None else canned_answer(model, prompt)
    finish = "stop"
    for s in stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    if max_tokens is not None and len(text) > max_tokens * CHARS_PER_TOKEN:
        text, finish = text[: max_tokens * CHARS_PER_TOKEN], "length"
    return text, finish


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _tokens(prompt: str, answer: str) -> tuple[int, int]:
    # A rough count (about 4 characters a token) is enough for a simulator's usage block.
    return max(1, len(prompt) // CHARS_PER_TOKEN), max(1, len(answer) // CHARS_PER_TOKEN)


@functools.lru_cache(maxsize=16)
def _training_answers(path: Path) -> dict[str, str]:
    """Prompt → answer of a sandbox training file (chat or prompt/completion rows), for recall."""
    out: dict[str, str] = {}
    try:
        fh = path.open(encoding="utf-8-sig", errors="replace")
    except OSError:
        return out
    with fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            messages = row.get("messages")
            if isinstance(messages, list) and messages:
                users = [m for m in messages[:-1] if isinstance(m, dict) and m.get("role") == "user"]
                last = messages[-1]
                if users and isinstance(last, dict) and last.get("role") == "assistant":
                    out.setdefault(_text(users[-1].get("content")).strip(), _text(last.get("content")))
            elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
                out.setdefault(row["prompt"].strip(), row["completion"])
    return out


def canned_answer(model: str, prompt: str) -> str:
    echo = prompt.strip().replace("\n", " ")
    if len(echo) > 200:
        echo = echo[:200] + "…"
    return f'{TAG} Simulated output of {model}; no model was trained. You said: "{echo}"'
