"""Preference tuning (DPO) with trl's ``DPOTrainer`` on pairs tokenized by ``service.training.data``.

The reference model: under LoRA the base with the adapter switched off (trl does this when it is
given a PEFT model and no ``ref_model``); when continuing a Tuneline adapter, trl's frozen copy of
that adapter (named ``ref``), so the reference is the model the run starts from; under full
fine-tuning a frozen copy of the starting weights.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from service.core.jobs.metrics import DPO_METRIC_COLUMNS
from service.training.data import EncodedPair, load_pairs
from service.training.methods import MetricNames

REF_ADAPTER = "ref"  # the name trl gives the frozen copy of a continued adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def to_dataset(pairs: list[EncodedPair]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt_ids": [p.prompt_ids for p in pairs],
            "chosen_ids": [p.chosen_ids for p in pairs],
            "rejected_ids": [p.rejected_ids for p in pairs],
        }
    )


def _trainer_class() -> Any:
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):  # type: ignore[misc]
        """trl's trainer on pairs tokenized here: its own preparation (prompt extraction, chat
        template, dropping pairs whose prompt fills ``max_length``) is skipped, so what trains is
        exactly what ``load_pairs`` checked."""

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            return dataset

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            restore_trained_adapter(model if model is not None else self.model, Path(resume_from_checkpoint))

    return PretokenizedDPOTrainer


def restore_trained_adapter(model: Any, checkpoint: Path) -> None:
    """Load the trained adapter of a checkpoint that also holds trl's ``ref`` adapter.

    PEFT saves the active adapter at the checkpoint's top and the others in subfolders; when
    there are subfolders, ``Trainer._load_from_checkpoint`` (transformers 5.18) loads only them, so
    the trained adapter would silently restart from its initial weights (the continued one).
    """
    weights = checkpoint / ADAPTER_WEIGHTS
    peft_config = getattr(model, "peft_config", None)
    if not (isinstance(peft_config, dict) and REF_ADAPTER in peft_config and weights.is_file()):
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(weights)), adapter_name=model.active_adapter)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(f"checkpoint {checkpoint} does not fit the adapter: {result.unexpected_keys[:3]}")


def drop_reference_adapter(model: Any) -> None:
    """The frozen ``ref`` adapter is trl's working copy: the saved model is the trained one only."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and REF_ADAPTER in peft_config:
        model.delete_adapter(REF_ADAPTER)


class Preference:
    """``method.type == "dpo"``: OpenAI's preference rows, trl's sigmoid DPO loss."""

    name = "dpo"
    metrics = MetricNames({"reward_margin": "rewards/margins", "preference_accuracy": "rewards/accuracies"})
    columns: tuple[str, ...] = DPO_METRIC_COLUMNS

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def load(self, path: Path, tokenizer: Any, max_length: int, what: str) -> list[EncodedPair]:
        return load_pairs(path, tokenizer, max_length, what)

    def dataset(self, examples: list[EncodedPair]) -> Any:
        return to_dataset(examples)

    def tokens(self, pairs: list[EncodedPair]) -> int:
        return sum(p.tokens for p in pairs)

    def trainer(
        self,
        *,
        model: Any,
        tokenizer: Any,
        args: dict[str, Any],
        train: list[EncodedPair],
        valid: list[EncodedPair] | None,
        peft_config: Any,
        callbacks: list[Any],
    ) -> Any:
        from accelerate.utils import is_peft_model
        from trl import DPOConfig

        # Full fine-tuning: trl would reload the reference from the model's path, which a GGUF
        # base does not have; a copy of the starting weights is the same model.
        ref_model = None if peft_config is not None or is_peft_model(model) else copy.deepcopy(model).eval()
        config = DPOConfig(
            **args,
            beta=self.beta,
            loss_type=["sigmoid"],
            # trl's default: dropout off in policy and reference, so that their log-probabilities
            # differ only by the training (LoRA's dropout has no effect under DPO).
            disable_dropout=True,
            precompute_ref_log_probs=False,
        )
        return _trainer_class()(
            model=model,
            ref_model=ref_model,
            args=config,
            train_dataset=to_dataset(train),
            eval_dataset=to_dataset(valid) if valid else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
