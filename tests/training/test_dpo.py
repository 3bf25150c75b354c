"""DPO through the training child on the tiny model: preference pairs made from the sample Q&A,
TRL's reward figures per step and in result.csv, LoRA's reference (the base with the adapter off),
continuing an SFT adapter (the reference is the SFT model), and held-out preference evaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tests.support.training import TORCH_MISSING, TrainedRun, child_spec, train_to_end
from tests.training.conftest import DPO_HYPERPARAMETERS

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.core.jobs.metrics import DPO_METRIC_COLUMNS

pytestmark = pytest.mark.slow

LN2 = math.log(2)  # the DPO loss while the policy equals its reference (every reward is 0)
DPO_LINE_KEYS = {
    "type",
    "step",
    "train_loss",
    "train_reward_margin",
    "train_preference_accuracy",
    "valid_loss",
    "valid_reward_margin",
    "valid_preference_accuracy",
    "tokens_per_s",
    "eta_s",
    "epoch",
}


def _adapter(model_dir: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return dict(load_file(str(model_dir / "adapter_model.safetensors")))


def _norm(tensors: list[object]) -> float:
    import torch

    return float(torch.sqrt(sum((t**2).sum() for t in tensors)))  # type: ignore[operator]


def test_dpo_continuing_an_sft_adapter(tiny_model: Path, sft_run: TrainedRun, dpo_run: TrainedRun) -> None:
    run = dpo_run.run
    started = run.of("started")[0]
    assert started["train_examples"] == 48 and started["total_steps"] == 12
    # The SFT adapter itself trains on (its size, not a new adapter's from the spec's knobs).
    assert started["trainable_params"] == sft_run.run.of("started")[0]["trainable_params"]

    metrics = run.of("metrics")
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert all(set(m) == DPO_LINE_KEYS for m in metrics)
    # Step 1 runs the starting policy against the reference: equal, although the SFT adapter is far
    # from zero, so the reference is the SFT model (trl's frozen copy of the adapter), not the base.
    assert metrics[0]["train_loss"] == pytest.approx(LN2, abs=1e-6)
    assert metrics[0]["train_reward_margin"] == 0
    assert any(m["train_reward_margin"] != 0 for m in metrics[1:])
    assert all(0 <= m["train_preference_accuracy"] <= 1 for m in metrics)
    evaluated = [m for m in metrics if m["valid_loss"] is not None]
    assert [m["step"] for m in evaluated] == [5, 10, 12]  # every checkpoint_every steps and the last
    assert all(
        m["valid_reward_margin"] is not None and m["valid_preference_accuracy"] is not None for m in evaluated
    )

    finished = run.of("finished")[0]
    assert finished["full_valid_loss"] > 0 and 0 <= finished["full_valid_preference_accuracy"] <= 1
    assert finished["full_valid_reward_margin"] is not None
    with (dpo_run.output_dir / "result.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == DPO_METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert float(rows[4]["valid_preference_accuracy"]) == evaluated[0]["valid_preference_accuracy"]
    assert float(rows[-1]["full_valid_reward_margin"]) == pytest.approx(finished["full_valid_reward_margin"])

    model_dir = dpo_run.model_dir
    meta = json.loads((model_dir / "tuneline-model.json").read_text(encoding="utf-8"))
    assert meta["base_model"] == str(tiny_model) and meta["from_model"] == str(sft_run.model_dir)
    assert (meta["method"], meta["training_type"]) == ("dpo", "lora")
    assert not (model_dir / "ref").exists()  # trl's working copy is not part of the model
    # The trained adapter moved away from the SFT adapter but not far: its A matrices stay near the
    # SFT ones (a new adapter would draw fresh random A matrices, about 1.4x the SFT norm away).
    sft, dpo = _adapter(sft_run.model_dir), _adapter(model_dir)
    assert set(sft) == set(dpo)
    for part in ("lora_A", "lora_B"):
        names = [n for n in sft if part in n]
        moved = _norm([dpo[n] - sft[n] for n in names])  # type: ignore[operator]
        assert moved > 0, part
        if part == "lora_A":
            assert moved < 0.5 * _norm([sft[n] for n in names])

    from service.training.inference import generate

    text, _, _, completion_tokens = generate(
        str(model_dir), messages=[{"role": "user", "content": "消费现在还能买吗"}], max_tokens=6, device="cpu"
    )
    assert isinstance(text, str) and 0 < completion_tokens <= 6


def test_dpo_lora_reference_is_the_base_with_the_adapter_off(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = child_spec(
        tmp_path,
        "lora",
        tiny_model,
        data_dir / "pref_train.jsonl",
        method="dpo",
        hyperparameters={"max_steps": 3, "batch_size": 8, "learning_rate": 1e-2, "seed": 1},
    )
    trained = train_to_end(spec, tmp_path / "child.log")
    metrics = trained.run.of("metrics")
    # A new adapter starts with B = 0, so the policy is the base: exactly the reference.
    assert metrics[0]["train_loss"] == pytest.approx(LN2, abs=1e-6) and metrics[0]["train_reward_margin"] == 0
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert (trained.model_dir / "adapter_config.json").is_file()
    assert not (trained.model_dir / "model.safetensors").exists()
    config = json.loads((trained.model_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 16  # the documented default rank


def test_full_dpo_raises_preference_accuracy_over_the_base(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    from service.training.preference import evaluate_preferences

    pairs = data_dir / "pref_train.jsonl"
    spec = child_spec(
        tmp_path,
        "full",
        tiny_model,
        pairs,
        method="dpo",
        training_type="full",
        hyperparameters={
            **DPO_HYPERPARAMETERS,
            "n_epochs": 8,
            "batch_size": 4,
            "checkpoint_every": 1000,
            "seed": 1,
        },
    )
    trained = train_to_end(spec, tmp_path / "child.log")
    assert (trained.model_dir / "model.safetensors").is_file()
    losses = [m["train_loss"] for m in trained.run.of("metrics")]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8

    base = evaluate_preferences(str(tiny_model), pairs, device="cpu")
    tuned = evaluate_preferences(str(trained.model_dir), pairs, device="cpu")
    print(f"preference accuracy on the training pairs: base {base}, DPO {tuned}")
    assert base.pairs == tuned.pairs == 48
    # Summed log-probabilities of a random-weights model mostly reward the shorter answer (about
    # 8 nats a token), so the base sits near chance and DPO, which moves margins relative to the
    # reference, flips only part of the pairs: measured 0.479 -> 0.604, mean margin 0.0 -> 14.6.
    assert tuned.preference_accuracy > base.preference_accuracy
    assert tuned.mean_margin > base.mean_margin + 1.0
