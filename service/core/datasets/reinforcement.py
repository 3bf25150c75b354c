"""Reinforcement fine-tuning's sizes: answers sampled per prompt, steps and samples of a run.

One source for the API's estimate, the preparation report and the trainer (``service.training``
imports these), so that what a caller is told is what runs: each step takes ``batch_size``
prompts and samples ``num_generations`` answers for each (GRPO's group), which the grader scores.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_GENERATIONS = 4  # answers per prompt at compute_multiplier 1
MAX_GENERATIONS = 64
DEFAULT_BATCH_SIZE = 4  # prompts per step (the local trainer's default batch size)
DEFAULT_MAX_COMPLETION_LENGTH = 256  # tokens per sampled answer, at most


def num_generations(compute_multiplier: float = 1.0) -> int:
    """Answers sampled per prompt: ``compute_multiplier`` x 4, rounded, at least 2 (GRPO compares
    answers to the same prompt) and at most 64."""
    return min(MAX_GENERATIONS, max(2, round(DEFAULT_GENERATIONS * compute_multiplier)))


def _number(hyper: dict[str, Any], name: str, default: float) -> float:
    value = hyper.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def estimate(prompts: int, n_epochs: int, hyperparameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Steps and sampled answers of a run over ``prompts`` training rows; ``"auto"`` knobs take
    the trainer's defaults. ``max_generated_tokens`` bounds what the model writes (every answer
    at ``max_completion_length``): generation, not the update, dominates a step's time."""
    hyper = hyperparameters or {}
    generations = num_generations(_number(hyper, "compute_multiplier", 1.0))
    batch = int(_number(hyper, "batch_size", DEFAULT_BATCH_SIZE))
    length = int(_number(hyper, "max_completion_length", DEFAULT_MAX_COMPLETION_LENGTH))
    steps_per_epoch = math.ceil(prompts / batch) if prompts else 0
    samples = prompts * generations * n_epochs
    return {
        "prompts": prompts,
        "n_epochs": n_epochs,
        "batch_size": batch,
        "num_generations": generations,
        "steps": steps_per_epoch * n_epochs,
        "samples": samples,
        "max_completion_length": length,
        "max_generated_tokens": samples * length,
    }
