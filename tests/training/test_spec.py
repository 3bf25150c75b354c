"""SPEC.json parsing: documented defaults, OpenAI's "auto", and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.training.errors import TrainingError
from service.training.spec import (
    DEFAULT_BETA,
    DEFAULT_DPO_LR_FULL,
    DEFAULT_DPO_LR_LORA,
    DEFAULT_LR_FULL,
    DEFAULT_LR_LORA,
    DEFAULT_RL_BETA,
    DEFAULT_RL_LR_FULL,
    DEFAULT_RL_LR_LORA,
    Hyperparameters,
    TrainSpec,
)

BASE = {"job_id": "ftjob-1", "base_model": "smollm2-135m", "train_file": "t.jsonl", "output_dir": "out"}


def test_defaults_and_auto() -> None:
    spec = TrainSpec.from_dict({**BASE, "hyperparameters": {"n_epochs": "auto", "batch_size": None}})
    assert spec.method == "supervised" and spec.training_type == "lora" and spec.from_model is None
    assert spec.device == "auto" and spec.resume is False and spec.threads is None
    assert spec.hyperparameters == Hyperparameters()
    assert spec.checkpoints_dir == Path("out/checkpoints") and spec.model_dir == Path("out/model")
    assert spec.hyperparameters.effective_learning_rate("lora") == DEFAULT_LR_LORA
    assert spec.hyperparameters.effective_learning_rate("full") == DEFAULT_LR_FULL
    assert spec.pause_file == Path("out/PAUSE")


def test_dpo_method_its_defaults_and_beta() -> None:
    spec = TrainSpec.from_dict(
        {
            **BASE,
            "method": "dpo",
            "training_type": "full",
            "from_model": "m",
            "hyperparameters": {"beta": 0.3},
        }
    )
    assert (spec.method, spec.training_type, spec.from_model) == ("dpo", "full", Path("m"))
    hp = spec.hyperparameters
    assert hp.beta == 0.3 and Hyperparameters().beta == DEFAULT_BETA
    assert hp.effective_learning_rate("full", "dpo") == DEFAULT_DPO_LR_FULL
    assert hp.effective_learning_rate("lora", "dpo") == DEFAULT_DPO_LR_LORA


def test_reinforcement_defaults_and_the_generations_of_compute_multiplier() -> None:
    grader = {"type": "string_check", "name": "g", "input": "x", "reference": "x", "operation": "eq"}
    spec = TrainSpec.from_dict({**BASE, "method": "reinforcement", "grader": grader})
    hp = spec.hyperparameters
    assert spec.grader == grader and spec.python_grader is None
    assert (hp.beta, hp.num_generations, hp.max_completion_length) == (DEFAULT_RL_BETA, 4, 256)
    assert hp.effective_learning_rate("lora", "reinforcement") == DEFAULT_RL_LR_LORA
    assert hp.effective_learning_rate("full", "reinforcement") == DEFAULT_RL_LR_FULL

    def generations(multiplier: float) -> int:
        raw = {
            **BASE,
            "method": "reinforcement",
            "grader": grader,
            "hyperparameters": {"compute_multiplier": multiplier},
        }
        return TrainSpec.from_dict(raw).hyperparameters.num_generations

    assert [generations(m) for m in (0.1, 0.5, 1.5, 2, 100)] == [2, 2, 6, 8, 64]
    no_kl = TrainSpec.from_dict(
        {**BASE, "method": "reinforcement", "grader": grader, "hyperparameters": {"beta": 0}}
    )
    assert no_kl.hyperparameters.beta == 0  # GRPO without a reference model


@pytest.mark.parametrize("legacy", ["lora", "full"])
def test_older_specs_with_the_training_type_in_method_are_supervised(legacy: str) -> None:
    spec = TrainSpec.from_dict({**BASE, "method": legacy})
    assert (spec.method, spec.training_type) == ("supervised", legacy)


def test_learning_rate_multiplier_scales_the_default_unless_a_rate_is_given() -> None:
    hp = TrainSpec.from_dict({**BASE, "hyperparameters": {"learning_rate_multiplier": 2}}).hyperparameters
    assert hp.effective_learning_rate("lora") == pytest.approx(2 * DEFAULT_LR_LORA)
    hp = TrainSpec.from_dict(
        {**BASE, "hyperparameters": {"learning_rate_multiplier": 2, "learning_rate": 1e-3}}
    ).hyperparameters
    assert hp.effective_learning_rate("lora") == 1e-3


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"method": "qlora"}, "method"),
        ({"method": "full", "training_type": "lora"}, "contradicts"),
        ({"training_type": "qlora"}, "training_type"),
        ({"hyperparameters": {"beta": 0.1}}, "dpo and reinforcement methods only"),
        ({"method": "dpo", "hyperparameters": {"beta": 0}}, "beta"),
        ({"device": "tpu"}, "device"),
        ({"threads": 0}, "threads"),
        ({"hyperparameters": {"n_epochs": 1.5}}, "n_epochs"),
        ({"hyperparameters": {"batch_size": 0}}, "batch_size"),
        ({"hyperparameters": {"learning_rate": "fast"}}, "learning_rate"),
        ({"hyperparameters": {"lora_dropout": 1.0}}, "lora_dropout"),
        ({"hyperparameters": {"warmup": 3}}, "warmup"),
        ({"method": "reinforcement"}, "grader"),
        ({"grader": {"type": "string_check"}}, "grader"),
        ({"hyperparameters": {"compute_multiplier": 2}}, "reinforcement method only"),
        ({"method": "dpo", "hyperparameters": {"max_completion_length": 8}}, "reinforcement method only"),
        ({"method": "reinforcement", "grader": {}, "hyperparameters": {"beta": -0.1}}, "beta"),
        ({"method": "reinforcement", "grader": {}, "hyperparameters": {"compute_multiplier": 0}}, "compute"),
    ],
)
def test_bad_values_are_named(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(TrainingError, match=fragment) as caught:
        TrainSpec.from_dict({**BASE, **change})
    assert caught.value.code == "training_failed"


def test_missing_field_and_unreadable_spec(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="train_file"):
        TrainSpec.from_dict({"base_model": "x", "output_dir": "o"})
    (tmp_path / "spec.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TrainingError, match="not a JSON object"):
        TrainSpec.load(tmp_path / "spec.json")
    with pytest.raises(TrainingError, match="cannot read"):
        TrainSpec.load(tmp_path / "missing.json")
