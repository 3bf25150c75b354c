"""What differs between training methods (OpenAI's ``method.type``): data, trainer, metric names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


def rounded(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


@dataclass(frozen=True)
class MetricNames:
    """A method's per-step figures beside the loss: our column suffix -> trl's log key.

    Training logs carry trl's key (``rewards/margins``), evaluation logs ``eval_`` + it; the
    columns are ``train_<suffix>``, ``valid_<suffix>`` and ``full_valid_<suffix>``.
    """

    trl_keys: dict[str, str]

    @property
    def keys(self) -> tuple[str, ...]:
        """The figures of a protocol ``metrics`` line and of a checkpoint, in order."""
        return (
            "train_loss",
            *(f"train_{suffix}" for suffix in self.trl_keys),
            "valid_loss",
            *(f"valid_{suffix}" for suffix in self.trl_keys),
        )

    def train(self, logs: dict[str, Any]) -> dict[str, float | None]:
        values = {"train_loss": rounded(logs["loss"])}
        values.update({f"train_{s}": rounded(logs.get(key)) for s, key in self.trl_keys.items()})
        return values

    def evaluation(self, logs: dict[str, Any] | None, prefix: str = "valid") -> dict[str, float | None]:
        """``valid_*`` (or ``full_valid_*``) from an evaluation's logs; ``None`` values without one."""
        logs = logs or {}
        values = {f"{prefix}_loss": rounded(logs.get("eval_loss"))}
        values.update({f"{prefix}_{s}": rounded(logs.get(f"eval_{key}")) for s, key in self.trl_keys.items()})
        return values


class Method(Protocol):
    """One training method: how its data is read and tokenized, and which trl trainer runs it."""

    name: str
    metrics: MetricNames
    columns: tuple[str, ...]  # of result.csv and the metrics route (service.core.jobs.metrics)

    def load(self, path: Path, tokenizer: Any, max_length: int, what: str) -> list[Any]:
        """Every example of a file, tokenized; errors name the line."""
        ...

    def dataset(self, examples: list[Any]) -> Any:
        """The examples as the ``datasets.Dataset`` the trainer takes."""
        ...

    def tokens(self, examples: list[Any]) -> int:
        """Tokens one epoch runs through the model."""
        ...

    def trainer(
        self,
        *,
        model: Any,
        tokenizer: Any,
        args: dict[str, Any],
        train: list[Any],
        valid: list[Any] | None,
        peft_config: Any,
        callbacks: list[Any],
    ) -> Any:
        """The trl trainer; ``args`` are the ``TrainingArguments`` every method shares."""
        ...
