"""Tuneline's own table of fine-tunable models: tokenizer, example limit, price and epoch rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Prices are OpenAI's published training prices (USD per 1M trained tokens). Keep the date in
# step with the numbers: the estimate is only as good as this table.
PRICES_AS_OF = "2025-06-01"

Style = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What Tuneline needs to know about one base model to prepare data for it."""

    name: str
    encoding: str  # tiktoken encoding name
    max_tokens_per_example: int  # training context: longer examples are truncated by the vendor
    price_per_million: float  # USD per 1M training tokens
    style: Style
    methods: tuple[str, ...] = ("supervised",)
    default_epochs: int = 3


# tiktoken's own model map sends `gpt-4.1` fine-tunes to the wrong encoding, so Tuneline keeps
# its own table instead of calling `tiktoken.encoding_for_model`.
MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("gpt-4o-mini-2024-07-18", "o200k_base", 65_536, 3.00, "chat", ("supervised", "dpo")),
        ModelSpec("gpt-4o-2024-08-06", "o200k_base", 65_536, 25.00, "chat", ("supervised", "dpo")),
        ModelSpec("gpt-4.1-2025-04-14", "o200k_base", 65_536, 25.00, "chat", ("supervised", "dpo")),
        ModelSpec("gpt-4.1-mini-2025-04-14", "o200k_base", 65_536, 5.00, "chat", ("supervised", "dpo")),
        ModelSpec("gpt-4.1-nano-2025-04-14", "o200k_base", 65_536, 1.50, "chat", ("supervised", "dpo")),
        ModelSpec("gpt-3.5-turbo-0125", "cl100k_base", 16_385, 8.00, "chat"),
        ModelSpec("babbage-002", "cl100k_base", 16_384, 0.40, "completion"),
        ModelSpec("davinci-002", "cl100k_base", 16_384, 6.00, "completion"),
    )
}

# What using a fine-tuned model of each base costs (OpenAI's published prices, USD per 1M input and
# output tokens, as of PRICES_AS_OF).
FT_USAGE_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini-2024-07-18": (0.30, 1.20),
    "gpt-4o-2024-08-06": (3.75, 15.00),
    "gpt-4.1-2025-04-14": (3.00, 12.00),
    "gpt-4.1-mini-2025-04-14": (0.80, 3.20),
    "gpt-4.1-nano-2025-04-14": (0.20, 0.80),
    "gpt-3.5-turbo-0125": (3.00, 6.00),
    "babbage-002": (1.60, 1.60),
    "davinci-002": (12.00, 12.00),
}

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"

# OpenAI's default epoch rule (fine-tuning guide / cookbook "chat_finetuning_data_prep").
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def resolve_model(name: str) -> ModelSpec:
    """The spec for a base model name, or for the base of a `ft:<base>:...` fine-tuned name."""
    if name.startswith("ft:"):
        parts = name.split(":")
        if len(parts) > 1:
            name = parts[1]
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None


def default_epochs(n_examples: int) -> int:
    """Epochs OpenAI picks when `n_epochs` is auto: 3, nudged so examples × epochs is in range."""
    n_epochs = TARGET_EPOCHS
    if n_examples <= 0:
        return n_epochs
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    elif n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return n_epochs


def training_cost_usd(spec: ModelSpec, billed_tokens_per_epoch: int, n_epochs: int) -> float:
    """Estimated training cost: epochs × billed tokens × price."""
    return round(billed_tokens_per_epoch * n_epochs * spec.price_per_million / 1_000_000, 4)


def usage_cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    """What answering with a fine-tuned model of base ``model`` costs for these tokens."""
    per_input, per_output = FT_USAGE_PRICES[resolve_model(model).name]
    return (input_tokens * per_input + output_tokens * per_output) / 1e6
