"""Training examples: chat through the chat template with loss on assistant turns only,
prompt/completion with loss on the completion only, preference pairs (DPO) as prompt and two
completions; over-long examples are errors, never truncated."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from service.training.errors import EXAMPLE_TOO_LONG, INVALID_TRAINING_FILE, TRAINING_FAILED, TrainingError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ``labels`` is ``input_ids`` with untrained positions set to -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise ValueError("message content must be a string or a list of text parts")


def chat_messages(raw: Any) -> tuple[list[dict[str, str]], list[bool]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("`messages` must be a non-empty list")
    messages: list[dict[str, str]] = []
    trained: list[bool] = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{index}] must be an object with a `role`")
        messages.append({"role": message["role"], "content": _text(message.get("content"))})
        trained.append(message["role"] == "assistant" and message.get("weight", 1) != 0)
    return messages, trained


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert isinstance(text, str)
    return text


def _mask_by_spans(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> Encoded:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for position, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(lo <= start and end <= hi for lo, hi in spans):
            labels[position] = ids[position]
    return Encoded(ids, labels)


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], trained: list[bool] | None = None) -> Encoded:
    """Render with the tokenizer's chat template; train on the assistant turns only.

    Templates without ``{% generation %}`` markers (SmolLM2's) give ``trl`` an all-zero assistant
    mask, so the mask is built here: each trained assistant turn is the text that rendering
    ``messages[: i + 1]`` adds to rendering ``messages[:i]`` with the generation prompt, i.e. the
    reply and its end-of-turn token, and a token is trained when it lies inside such a span.
    """
    trained = trained if trained is not None else [m["role"] == "assistant" for m in messages]
    full = render_chat(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for index in range(len(messages)):
        if not trained[index]:
            continue
        before = render_chat(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
        upto = render_chat(tokenizer, messages[: index + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise TrainingError(
                TRAINING_FAILED,
                "the chat template does not render conversations prefix by prefix, "
                "so the assistant turns cannot be located",
            )
        end = len(upto.rstrip())  # the newline after the end-of-turn token is not the reply's
        spans.append((len(before), max(end, len(before))))
    return _mask_by_spans(tokenizer, full, spans)


def encode_prompt_completion(tokenizer: Any, prompt: str, completion: str) -> Encoded:
    """Raw text ``prompt + completion + EOS``; train on the completion and EOS only."""
    encoded = _mask_by_spans(tokenizer, prompt + completion, [(len(prompt), len(prompt) + len(completion))])
    eos = tokenizer.eos_token_id
    if eos is None:
        return encoded
    return Encoded([*encoded.input_ids, eos], [*encoded.labels, eos])


def encode_record(tokenizer: Any, record: Any) -> Encoded:
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in record:
        messages, trained = chat_messages(record["messages"])
        return encode_chat(tokenizer, messages, trained)
    if "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("`prompt` and `completion` must be strings")
        return encode_prompt_completion(tokenizer, prompt, completion)
    raise ValueError("each line needs `messages`, or `prompt` and `completion`")


@dataclass(frozen=True)
class EncodedPair:
    """One preference pair: the prompt (up to the generation prompt) and the two completions."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def longest(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))

    @property
    def tokens(self) -> int:
        """Tokens of both sequences the trainer runs: prompt + chosen and prompt + rejected."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


def _one_assistant_message(raw: Any, field: str) -> dict[str, str]:
    if not isinstance(raw, list) or len(raw) != 1 or not isinstance(raw[0], dict):
        raise ValueError(f"`{field}` must be a list of exactly one assistant message")
    message = raw[0]
    if message.get("role") != "assistant":
        raise ValueError(f"`{field}[0].role` must be `assistant`")
    content = _text(message.get("content"))
    if not content.strip():
        raise ValueError(f"`{field}[0].content` is empty")
    return {"role": "assistant", "content": content}


def _completion_ids(
    tokenizer: Any, messages: list[dict[str, str]], prompt: str, output: dict[str, str]
) -> list[int]:
    """The tokens the chat template adds for ``output`` after the generation prompt: the reply and
    its end-of-turn token (the trailing newline is not the reply's, as in ``encode_chat``)."""
    full = render_chat(tokenizer, [*messages, output])
    if not full.startswith(prompt):
        raise TrainingError(
            TRAINING_FAILED,
            "the chat template does not render the reply after the generation prompt, "
            "so the preferred and non-preferred outputs cannot be located",
        )
    completion = full[len(prompt) : max(len(full.rstrip()), len(prompt))]
    return list(tokenizer(completion, add_special_tokens=False)["input_ids"])


def encode_replies(
    tokenizer: Any, raw_messages: Any, raw_replies: list[Any], fields: list[str]
) -> tuple[list[int], list[list[int]]]:
    """A chat prompt and candidate replies, each in OpenAI's output shape (a list of exactly one
    assistant message; ``fields`` names them in errors), through the chat template: the prompt's
    tokens up to the generation prompt, then each reply's. The prompt and the replies are tokenized
    apart, as a model sees them when it generates."""
    messages, _ = chat_messages(raw_messages)
    if messages[-1]["role"] == "assistant":
        raise ValueError("`input.messages` must not end with an assistant message")
    replies = [_one_assistant_message(raw, name) for raw, name in zip(raw_replies, fields, strict=True)]
    prompt = render_chat(tokenizer, messages, add_generation_prompt=True)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return prompt_ids, [_completion_ids(tokenizer, messages, prompt, reply) for reply in replies]


def encode_preference(tokenizer: Any, record: Any) -> EncodedPair:
    """OpenAI's preference row (``input.messages``, ``preferred_output``, ``non_preferred_output``)
    through the chat template (``encode_replies``)."""
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    if not isinstance(record.get("input"), dict):
        raise ValueError("`input` must be an object with `messages`")
    fields = ["preferred_output", "non_preferred_output"]
    outputs = [record.get(name) for name in fields]
    prompt_ids, (chosen_ids, rejected_ids) = encode_replies(
        tokenizer, record["input"].get("messages"), outputs, fields
    )
    if _one_assistant_message(outputs[0], fields[0]) == _one_assistant_message(outputs[1], fields[1]):
        raise ValueError("`preferred_output` and `non_preferred_output` are identical")
    return EncodedPair(prompt_ids=prompt_ids, chosen_ids=chosen_ids, rejected_ids=rejected_ids)


_Item = TypeVar("_Item")


def load_lines(path: Path, what: str, encode: Callable[[Any], _Item]) -> Iterator[tuple[int, _Item]]:
    """``(line number, encode(record))`` for every non-blank line; errors name the line."""
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise TrainingError(INVALID_TRAINING_FILE, f"cannot open the {what} {path}: {exc}") from None
    found = False
    with handle:
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    item = encode(json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise TrainingError(
                        INVALID_TRAINING_FILE, f"line {line_no} of the {what}: {exc}"
                    ) from None
                found = True
                yield line_no, item
        except UnicodeDecodeError as exc:
            raise TrainingError(INVALID_TRAINING_FILE, f"the {what} is not UTF-8: {exc}") from None
    if not found:
        raise TrainingError(INVALID_TRAINING_FILE, f"the {what} {path} has no examples")


def _too_long(line_no: int, what: str, tokens: int, max_length: int) -> TrainingError:
    return TrainingError(
        EXAMPLE_TOO_LONG,
        f"line {line_no} of the {what} has {tokens} tokens, more than the maximum sequence length "
        f"{max_length}; shorten or split it (nothing is truncated)",
    )


def _nothing_to_train(line_no: int, what: str) -> TrainingError:
    return TrainingError(INVALID_TRAINING_FILE, f"line {line_no} of the {what} has nothing to train on")


def load_examples(path: Path, tokenizer: Any, max_length: int, what: str = "training file") -> list[Encoded]:
    """Every example of a JSONL file, tokenized; bad or over-long lines are errors naming the line."""
    examples: list[Encoded] = []
    for line_no, encoded in load_lines(path, what, lambda record: encode_record(tokenizer, record)):
        if len(encoded.input_ids) > max_length:
            raise _too_long(line_no, what, len(encoded.input_ids), max_length)
        if encoded.trained_tokens == 0:
            raise _nothing_to_train(line_no, what)
        examples.append(encoded)
    return examples


def load_pairs(path: Path, tokenizer: Any, max_length: int, what: str = "training file") -> list[EncodedPair]:
    """Every preference pair of a JSONL file; a pair whose prompt plus either output is longer than
    ``max_length`` is an error naming the line (nothing is truncated)."""
    pairs: list[EncodedPair] = []
    for line_no, pair in load_lines(path, what, lambda record: encode_preference(tokenizer, record)):
        if pair.longest > max_length:
            raise _too_long(line_no, what, pair.longest, max_length)
        if not pair.chosen_ids or not pair.rejected_ids:
            raise _nothing_to_train(line_no, what)
        pairs.append(pair)
    return pairs
