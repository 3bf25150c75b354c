"""Reinforcement fine-tuning (OpenAI's ``method.type == "reinforcement"``) with trl's ``GRPOTrainer``.

The reward is the job's grader in OpenAI's JSON, scored by ``service.core.graders.run.grade`` for
each sampled answer (``{{sample.output_text}}``) against its dataset row (``{{item.*}}``). Rows
are OpenAI's: ``messages`` ending on a user turn, plus any fields the grader reads.

OpenAI's hyperparameters map onto GRPO as documented in docs/local-trainer.md: ``batch_size``
prompts per step, each answered ``num_generations`` times (``compute_multiplier`` x 4, at least 2);
``eval_samples`` answers per validation prompt; ``eval_interval`` steps between validations.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.errors import TunelineError
from service.core.graders import run, spec
from service.core.graders.sandbox import PythonLimits
from service.core.jobs.metrics import reinforcement_columns
from service.training.data import chat_messages, load_lines, render_chat
from service.training.errors import EXAMPLE_TOO_LONG, TRAINING_FAILED, TrainingError
from service.training.methods import MetricNames
from service.training.spec import Hyperparameters

GRADER_METRIC = "grader"  # trl logs the reward function's mean and spread under this name
PROMPT_ROLES = ("user",)  # OpenAI: the conversation ends on the user's turn


@dataclass(frozen=True)
class Prompt:
    """One reinforcement row: the conversation to answer, the row itself (the grader's ``item``)
    and the prompt's length in tokens after the chat template's generation prompt."""

    messages: list[dict[str, str]]
    item: dict[str, Any]
    prompt_tokens: int


def parse_grader(
    raw: dict[str, Any], python_grader: dict[str, float] | None
) -> tuple[spec.Grader, run.Context]:
    """The grader of a spec, and how it runs in this process: python graders with the operator's
    limits when enabled; no judge (model graders need the service's completions)."""
    policy = spec.Policy(python_enabled=python_grader is not None, check_model=None)
    try:
        grader = spec.parse(raw, policy, root="method.reinforcement.grader")
    except TunelineError as exc:
        raise TrainingError(TRAINING_FAILED, f"the grader cannot run in the trainer: {exc.message}") from None
    limits = PythonLimits()
    if python_grader is not None:
        limits = PythonLimits(
            timeout_s=float(python_grader.get("timeout_s", limits.timeout_s)),
            memory_bytes=int(python_grader.get("memory_mb", limits.memory_bytes // 1024**2)) * 1024**2,
        )
    return grader, run.Context(python_limits=limits, root="method.reinforcement.grader")


def encode_prompt(tokenizer: Any, record: Any, grader: spec.Grader) -> Prompt:
    """A row checked as the grader will read it; ``ValueError`` says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    messages, _ = chat_messages(record.get("messages"))
    if messages[-1]["role"] not in PROMPT_ROLES:
        raise ValueError(
            f"`messages` must end on a user message (the model answers it), not {messages[-1]['role']!r}"
        )
    missing = run.missing_fields(grader, record, root="method.reinforcement.grader")
    if missing:
        raise ValueError(f"field `{missing[0].field}` is missing: {missing[0].message}")
    prompt = render_chat(tokenizer, messages, add_generation_prompt=True)
    tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return Prompt(messages=messages, item=record, prompt_tokens=tokens)


def load_prompts(
    path: Path, tokenizer: Any, max_length: int, completion_length: int, grader: spec.Grader, what: str
) -> list[Prompt]:
    """Every row of a JSONL file; a prompt with no room for ``completion_length`` answer tokens
    within ``max_length`` is an error naming the line (nothing is truncated)."""
    prompts: list[Prompt] = []
    for line_no, prompt in load_lines(path, what, lambda record: encode_prompt(tokenizer, record, grader)):
        if prompt.prompt_tokens + completion_length > max_length:
            raise TrainingError(
                EXAMPLE_TOO_LONG,
                f"line {line_no} of the {what} has a {prompt.prompt_tokens}-token prompt; with "
                f"max_completion_length {completion_length} that exceeds the maximum sequence length "
                f"{max_length} (shorten the prompt or lower max_completion_length)",
            )
        prompts.append(prompt)
    return prompts


def to_dataset(prompts: list[Prompt]) -> Any:
    from datasets import Dataset

    # The row goes as JSON text: rows may differ in shape, which a columnar dataset cannot hold.
    return Dataset.from_dict(
        {
            "prompt": [p.messages for p in prompts],
            "item": [json.dumps(p.item, ensure_ascii=False) for p in prompts],
        }
    )


def _text(completion: Any) -> str:
    """A completion's text: trl hands conversational answers as ``[{"role": "assistant", ...}]``."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def grader_reward(parsed: spec.Grader, ctx: run.Context) -> Callable[..., list[float]]:
    """trl's reward function: the grader's reward per sampled answer; for ``multi``, each named
    grader's mean score is logged too (``grader/<name>``).

    An answer the grader cannot read (``{{sample.output_json}}`` of an answer that is not JSON, a
    formula that cannot be computed for it) scores 0, as OpenAI's run route reports it; the rows
    themselves were checked when they were loaded.
    """

    def grader(completions: list[Any], item: list[str], **kwargs: Any) -> list[float]:
        rewards: list[float] = []
        parts: dict[str, list[float]] = defaultdict(list)
        for completion, row in zip(completions, item, strict=True):
            try:
                graded = run.grade(parsed, _text(completion), json.loads(row), ctx)
            except TunelineError:
                rewards.append(0.0)
                continue
            rewards.append(graded.reward if math.isfinite(graded.reward) else 0.0)
            for name, score in graded.sub_rewards.items():
                parts[name].append(score)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, scores in parts.items():
                log_metric(f"{GRADER_METRIC}/{name}", sum(scores) / len(scores))
        return rewards

    return grader  # trl names a reward function's figures after it (rewards/grader/mean)


def multi_keys(grader: spec.Grader) -> tuple[str, ...]:
    return tuple(grader.graders) if isinstance(grader, spec.Multi) else ()


def _trainer_class() -> Any:
    from trl import GRPOTrainer

    from service.training.dpo import restore_trained_adapter

    class GraderGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
        """trl's trainer; a continued adapter's checkpoint also holds trl's ``ref`` copy, so the
        trained adapter is restored as under DPO."""

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            restore_trained_adapter(model if model is not None else self.model, Path(resume_from_checkpoint))

    return GraderGRPOTrainer


class Reinforcement:
    """``method.type == "reinforcement"``: GRPO with the grader as the only reward function."""

    name = "reinforcement"

    def __init__(
        self, grader: dict[str, Any], python_grader: dict[str, float] | None, hyperparameters: Hyperparameters
    ) -> None:
        self.grader, self.context = parse_grader(grader, python_grader)
        self.hp = hyperparameters
        keys = multi_keys(self.grader)
        self.metrics = MetricNames(
            {
                "reward_mean": "reward",
                "reward_std": "reward_std",
                "completion_length": "completions/mean_length",
                "kl": "kl",
                **{f"grader_{key}": f"{GRADER_METRIC}/{key}" for key in keys},
            }
        )
        self.columns = reinforcement_columns(keys)

    def load(self, path: Path, tokenizer: Any, max_length: int, what: str) -> list[Prompt]:
        return load_prompts(path, tokenizer, max_length, self.hp.max_completion_length, self.grader, what)

    def dataset(self, examples: list[Prompt]) -> Any:
        return to_dataset(examples)

    def tokens(self, prompts: list[Prompt]) -> int:
        """Prompt tokens one epoch reads: each prompt once per sampled answer."""
        return sum(p.prompt_tokens for p in prompts) * self.hp.num_generations

    def trainer(
        self,
        *,
        model: Any,
        tokenizer: Any,
        args: dict[str, Any],
        train: list[Prompt],
        valid: list[Prompt] | None,
        peft_config: Any,
        callbacks: list[Any],
    ) -> Any:
        from accelerate.utils import is_peft_model
        from trl import GRPOConfig

        hp = self.hp
        generations = hp.num_generations
        eval_samples = hp.eval_samples or 1
        shared = {k: v for k, v in args.items() if k != "max_length"}  # GRPO bounds the answer instead
        shared["per_device_train_batch_size"] = hp.batch_size * generations  # trl counts answers
        shared["per_device_eval_batch_size"] = hp.batch_size * eval_samples
        if hp.eval_interval:
            shared["eval_steps"] = hp.eval_interval
        # Full fine-tuning: trl would reload the reference from the model's path, which a GGUF base
        # does not have; it is built without one (beta 0) and given a frozen copy of the start.
        full_with_kl = hp.beta != 0 and peft_config is None and not is_peft_model(model)
        config = GRPOConfig(
            **shared,
            num_generations=generations,
            num_generations_eval=eval_samples,
            max_completion_length=hp.max_completion_length,
            beta=0.0 if full_with_kl else hp.beta,
            temperature=1.0,
            disable_dropout=True,  # policy and reference log-probabilities differ only by training
            log_completions=False,
        )
        reference = copy.deepcopy(model).eval() if full_with_kl else None
        trainer = _trainer_class()(
            model=model,
            reward_funcs=[grader_reward(self.grader, self.context)],
            args=config,
            train_dataset=to_dataset(train),
            eval_dataset=to_dataset(valid) if valid else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        if reference is not None:
            for parameter in reference.parameters():
                parameter.requires_grad_(False)
            trainer.ref_model = trainer.accelerator.prepare_model(reference, evaluation_mode=True)
            trainer.beta = config.beta = hp.beta
        return trainer


@dataclass(frozen=True)
class GraderSummary:
    """``grader_score``: the mean grader score (0-1) of greedy answers over ``examples`` rows."""

    examples: int
    grader_score: float

    def as_dict(self) -> dict[str, float | int]:
        return {"examples": self.examples, "grader_score": self.grader_score}


def evaluate_grader(
    model_dir_or_base: str,
    test_file: Path,
    grader: dict[str, Any],
    *,
    max_tokens: int,
    device: str = "auto",
    cache_dir: Path | None = None,
) -> GraderSummary:
    """Answer every row of ``test_file`` greedily with a trained model (or a base model: call it
    again with the base for the baseline) and score the answers with ``grader``."""
    from service.training.engine import model_context
    from service.training.inference import generate, get_model

    parsed, ctx = parse_grader(grader, None)
    loaded = get_model(model_dir_or_base, device, cache_dir)
    context = model_context(loaded.model, loaded.tokenizer)
    prompts = load_prompts(test_file, loaded.tokenizer, context, 1, parsed, "test file")
    scores = []
    for prompt in prompts:
        text, _, _, _ = generate(
            model_dir_or_base,
            messages=prompt.messages,
            max_tokens=max_tokens,
            device=device,
            cache_dir=cache_dir,
        )
        try:
            scores.append(run.grade(parsed, text, prompt.item, ctx).reward)
        except TunelineError:
            scores.append(0.0)
    return GraderSummary(examples=len(prompts), grader_score=sum(scores) / len(scores))
