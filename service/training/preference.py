"""Held-out preference evaluation: how often a model gives the preferred output a higher
log-probability than the non-preferred one, given the prompt (``preference_accuracy``, DESIGN §9).

``score_replies`` is what the infer worker runs for the evaluating stage (one pair at a time, on
the cached model); ``evaluate_preferences`` scores a whole file in-process (tests, benchmarks).
Both use the tokens DPO trains on (``service.training.data.encode_replies``) and the one rule of
``service.core.evaluation.metrics.preference_accuracy`` (a tie is not a preference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.evaluation.metrics import preference_accuracy
from service.training.data import EncodedPair, encode_replies, load_pairs
from service.training.engine import model_context
from service.training.errors import TrainingError
from service.training.inference import CONTEXT_LENGTH_EXCEEDED, DEFAULT_MAX_MODELS, get_model


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


def score_replies(
    model_dir_or_base: str,
    messages: Any,
    replies: list[Any],
    *,
    device: str = "auto",
    cache_dir: Path | None = None,
    max_models: int = DEFAULT_MAX_MODELS,
) -> tuple[list[float], list[int]]:
    """Summed log-probability (nats) and token count of each reply after the chat ``messages``.

    A reply is OpenAI's output shape: a list of exactly one assistant message (its tokens are the
    reply and its end-of-turn token, as DPO trains them). Raises ValueError on a malformed row and
    ``context_length_exceeded`` when the prompt and a reply do not fit the model's context.
    """
    loaded = get_model(model_dir_or_base, device, cache_dir, max_models)
    fields = [f"replies[{i}]" for i in range(len(replies))]
    prompt_ids, reply_ids = encode_replies(loaded.tokenizer, messages, replies, fields)
    context = model_context(loaded.model, loaded.tokenizer)
    longest = len(prompt_ids) + max((len(ids) for ids in reply_ids), default=0)
    if longest > context:
        raise TrainingError(
            CONTEXT_LENGTH_EXCEEDED,
            f"the prompt and its longest reply have {longest} tokens; the model's context is {context}",
        )
    import torch

    with loaded.lock, torch.inference_mode():
        logprobs = [completion_logprob(loaded.model, prompt_ids, ids, loaded.device) for ids in reply_ids]
    return logprobs, [len(ids) for ids in reply_ids]


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
        preference_accuracy=preference_accuracy(margins) or 0.0,
        mean_margin=sum(margins) / len(pairs),
    )
