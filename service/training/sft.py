"""Supervised fine-tuning with trl's ``SFTTrainer`` on examples tokenized by ``service.training.data``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.core.jobs.metrics import METRIC_COLUMNS
from service.training.data import Encoded, load_examples
from service.training.methods import MetricNames


def to_dataset(examples: list[Encoded]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]}
    )


class Supervised:
    """``method.type == "supervised"``: loss on assistant turns (or completions) only."""

    name = "supervised"
    metrics = MetricNames({"mean_token_accuracy": "mean_token_accuracy"})
    columns: tuple[str, ...] = METRIC_COLUMNS

    def load(self, path: Path, tokenizer: Any, max_length: int, what: str) -> list[Encoded]:
        return load_examples(path, tokenizer, max_length, what)

    def dataset(self, examples: list[Encoded]) -> Any:
        return to_dataset(examples)

    def tokens(self, examples: list[Encoded]) -> int:
        return sum(len(e.input_ids) for e in examples)

    def trainer(
        self,
        *,
        model: Any,
        tokenizer: Any,
        args: dict[str, Any],
        train: list[Encoded],
        valid: list[Encoded] | None,
        peft_config: Any,
        callbacks: list[Any],
    ) -> Any:
        from trl import SFTConfig, SFTTrainer

        # The tokenized dataset (input_ids, labels) is handed over ready-made: trl neither
        # re-tokenizes nor truncates it (over-long examples were refused while loading).
        return SFTTrainer(
            model=model,
            args=SFTConfig(**args, packing=False),
            train_dataset=to_dataset(train),
            eval_dataset=to_dataset(valid) if valid else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
