"""Reinforcement on the local provider through the API: OpenAI's request with a string_check
grader, trained by GRPO in a real training child, evaluated on a held-out split by the infer
worker against the base, with GRPO's figures in the metrics route and the result file."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.jobs.metrics import reinforcement_columns
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Stack
from tests.integration.test_local_jobs import get_json, sdk, upload, wait_terminal
from tests.support.training import KEYWORD_GRADER, reinforcement_rows

pytestmark = pytest.mark.slow


def test_reinforcement_job_beats_its_base_on_the_held_out_grader_score(
    local: Stack, local_base_model: Path, tmp_path: Path
) -> None:
    token = local.key()
    client = sdk(local, token)
    rows = reinforcement_rows(SAMPLE_DATA / "funds_qa.jsonl", tmp_path / "rl.jsonl", 0, 60)
    training = upload(client, rows.read_bytes())
    # As the engine test (tests/training/test_reinforcement.py): full fine-tuning at a high rate,
    # answers of 4 tokens, a small KL term; about 40 steps.
    hyperparameters = {
        "n_epochs": 10,
        "batch_size": 8,
        "training_type": "full",
        "learning_rate": 1e-2,
        "max_completion_length": 4,
        "beta": 0.01,
    }
    job = client.fine_tuning.jobs.create(
        model=str(local_base_model),
        training_file=training,
        method={
            "type": "reinforcement",
            "reinforcement": {"grader": KEYWORD_GRADER, "hyperparameters": hyperparameters},  # type: ignore[typeddict-item]
        },
        seed=1,
        extra_body={"provider": "local", "prepare": {"split": {"test": 0.3, "seed": 2}}},
    )
    estimate = job.model_extra["estimate"]["reinforcement"]  # type: ignore[index]
    assert (estimate["num_generations"], estimate["batch_size"], estimate["n_epochs"]) == (4, 8, 10)
    done = wait_terminal(client, job.id, timeout=300)
    assert done.status == "succeeded", (done.error, local.logs())

    evaluation = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/evaluation?limit=100")
    assert evaluation["status"] == "completed"
    model, base = evaluation["metrics"], evaluation["baseline"]
    print(f"held-out grader_score: model {model['grader_score']}, base {base['grader_score']}")
    assert model["errors"] == base["errors"] == 0 and model["answered"] == base["answered"] >= 10
    assert model["grader_score"] > base["grader_score"]
    assert all(e["grader_score"] in (0.0, 1.0) for e in evaluation["data"])

    metrics = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics")["data"]
    assert len(metrics) >= 30
    assert all(0 <= m["train_reward_mean"] <= 1 and m["train_kl"] is not None for m in metrics)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith("Step 1/") and "mean reward=" in m for m in events)
    csv_text = get_json(local, token, f"/v1/fine_tuning/jobs/{job.id}/metrics?format=csv")
    assert csv_text.splitlines()[0] == ",".join(reinforcement_columns())
    result = client.files.content(done.result_files[0]).text.splitlines()
    assert result[0] == ",".join(reinforcement_columns()) and len(result) == len(metrics) + 1
