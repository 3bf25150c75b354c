"""Held-out preference evaluation: how often a model gives the preferred output a higher
log-probability than the non-preferred one, given the prompt (``preference_accuracy``, DESIGN §9)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.training.data import EncodedPair, load_pairs
from service.training.engine import model_context
from service.training.inference import get_model


@dataclass(frozen=True)
class PreferenceSummary:
    """``preference_accuracy``: share of pairs (0-1) whose preferred output scores strictly higher;
    ``mean_margin``: mean of log p(preferred) - log p(non-preferred), in nats."""

    pairs: int
    preference_accuracy: float
    mean_margin: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "pairs": self.pairs,
            "preference_accuracy": self.preference_accuracy,
            "mean_margin": self.mean_margin,
        }


def completion_logprob(model: Any, prompt_ids: list[int], completion_ids: list[int], device: str) -> float:
    """Summed log-probability of ``completion_ids`` after ``prompt_ids`` (teacher forcing)."""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids], device=device)
    logits = model(input_ids=ids).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    per_token = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(per_token[len(prompt_ids) - 1 :].sum())


def pair_margins(model: Any, pairs: list[EncodedPair], device: str) -> list[float]:
    """log p(preferred | prompt) - log p(non-preferred | prompt) for each pair."""
    import torch

    with torch.inference_mode():
        return [
            completion_logprob(model, p.prompt_ids, p.chosen_ids, device)
            - completion_logprob(model, p.prompt_ids, p.rejected_ids, device)
            for p in pairs
        ]


def evaluate_preferences(
    model_dir_or_base: str, test_file: Path, *, device: str = "auto", cache_dir: Path | None = None
) -> PreferenceSummary:
    """Score a trained model (or a base model: call it again with the base for the baseline) on a
    file of OpenAI preference rows; rows are checked as for training (errors name the line)."""
    loaded = get_model(model_dir_or_base, device, cache_dir)
    pairs = load_pairs(
        test_file, loaded.tokenizer, model_context(loaded.model, loaded.tokenizer), "test file"
    )
    with loaded.lock:
        margins = pair_margins(loaded.model, pairs, loaded.device)
    return PreferenceSummary(
        pairs=len(pairs),
        preference_accuracy=sum(1 for m in margins if m > 0) / len(pairs),
        mean_margin=sum(margins) / len(pairs),
    )
