"""DPO on the local provider through the API: an SFT job, then a DPO job on its ``ft:`` model;
held-out evaluation of a DPO job against the model it started from."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import pytest

from service.core.backends.local import local_state
from service.core.jobs import record
from service.core.jobs.metrics import DPO_METRIC_COLUMNS
from tests.conftest import SAMPLE_DATA
from tests.integration.conftest import Stack
from tests.integration.test_local_jobs import chat_rows, create_local, get_json, sdk, upload, wait_terminal
from tests.support.training import preference_pairs

# The held-out test below: SFT on sample Q&A rows as chat, then DPO on pairs from other rows.
SFT_ROWS = (1000, 1500)  # qa lines; disjoint from the pairs' lines
SFT_HYPERPARAMETERS = {"training_type": "full", "n_epochs": 3, "batch_size": 8, "learning_rate": 0.006}
PAIR_ROWS = 240
DPO_HYPERPARAMETERS = {
    "training_type": "full",
    "n_epochs": 2,
    "batch_size": 8,
    "learning_rate": 0.002,
    "beta": 0.05,
}
TEST_SPLIT = 0.2

pytestmark = pytest.mark.slow


def test_dpo_job_continues_the_sft_jobs_model(local: Stack, local_base_model: Path, tmp_path: Path) -> None:
    token = local.key()
    client = sdk(local, token)
    sft = create_local(client, upload(client, chat_rows(16)), local_base_model, n_epochs=1, batch_size=4)
    sft = wait_terminal(client, sft.id)
    assert sft.status == "succeeded", (sft.error, local.logs())

    pairs = preference_pairs(SAMPLE_DATA / "funds_qa.jsonl", tmp_path / "pref.jsonl", 0, 16)
    pref_file = upload(client, pairs.read_bytes())
    dpo = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=pref_file,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 4}}},
        extra_body={"provider": "local"},
    )
    done = wait_terminal(client, dpo.id)
    assert done.status == "succeeded", (done.error, local.logs())
    # Named after the original base, as OpenAI names a model trained on from a fine-tuned one.
    assert done.fine_tuned_model == f"ft:{local_base_model}:{done.organization_id}::{dpo.id}"

    # It trained from the SFT job's model: the spec the worker wrote says so.
    job = record.load(local.store, dpo.id)
    sft_job = record.load(local.store, sft.id)
    assert job is not None and sft_job is not None
    assert local_state(job).from_model == local_state(sft_job).model_dir
    assert local_state(job).base_model == str(local_base_model)

    rows = get_json(local, token, f"/v1/fine_tuning/jobs/{dpo.id}/metrics")["data"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(
        r["train_reward_margin"] is not None and 0 <= r["train_preference_accuracy"] <= 1 for r in rows
    )
    csv_text = get_json(local, token, f"/v1/fine_tuning/jobs/{dpo.id}/metrics?format=csv")
    assert csv_text.splitlines()[0] == ",".join(DPO_METRIC_COLUMNS)
    result = client.files.content(done.result_files[0]).text.splitlines()
    assert result[0] == ",".join(DPO_METRIC_COLUMNS) and len(result) == 5
    png = httpx2.get(
        f"{local.base_url}/v1/fine_tuning/jobs/{dpo.id}/metrics?format=png",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def qa_as_chat(start: int, stop: int) -> bytes:
    lines = (SAMPLE_DATA / "funds_qa.jsonl").read_text(encoding="utf-8").splitlines()[start:stop]
    rows = [json.loads(line) for line in lines]
    return "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r["completion"]},
                ]
            },
            ensure_ascii=False,
        )
        + "\n"
        for r in rows
    ).encode()


def test_dpo_raises_held_out_preference_accuracy_over_the_model_it_started_from(
    local: Stack, local_base_model: Path, tmp_path: Path
) -> None:
    """SFT, then DPO on its ``ft:`` model with ``prepare.split.test``: the evaluation scores both the
    DPO model and the SFT model (its baseline) on the held-out pairs by log-probability."""
    token = local.key()
    client = sdk(local, token)
    started = time.monotonic()
    sft = client.fine_tuning.jobs.create(
        model=str(local_base_model),
        training_file=upload(client, qa_as_chat(*SFT_ROWS)),
        method={"type": "supervised", "supervised": {"hyperparameters": SFT_HYPERPARAMETERS}},  # type: ignore[typeddict-item]
        seed=1,
        extra_body={"provider": "local"},
    )
    sft = wait_terminal(client, sft.id, 600)
    assert sft.status == "succeeded", (sft.error, local.logs())
    sft_s = time.monotonic() - started

    pairs = preference_pairs(SAMPLE_DATA / "funds_qa.jsonl", tmp_path / "pref.jsonl", 0, PAIR_ROWS)
    dpo = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=upload(client, pairs.read_bytes()),
        method={"type": "dpo", "dpo": {"hyperparameters": DPO_HYPERPARAMETERS}},  # type: ignore[typeddict-item]
        seed=1,
        extra_body={"provider": "local", "prepare": {"split": {"test": TEST_SPLIT, "seed": 7}}},
    )
    done = wait_terminal(client, dpo.id, 600)
    assert done.status == "succeeded", (done.error, local.logs())
    evaluation = get_json(local, token, f"/v1/fine_tuning/jobs/{dpo.id}/evaluation?limit=100")
    print(f"SFT {sft_s:.0f}s, DPO and evaluation {time.monotonic() - started - sft_s:.0f}s")
    tuned, base = evaluation["metrics"], evaluation["baseline"]
    print(f"held-out: DPO {tuned} vs its starting SFT model {base}")
    assert evaluation["status"] == "completed"
    # The baseline is the model the DPO job started from: the SFT job's model, not the random base.
    assert evaluation["baseline_model"] == sft.fine_tuned_model
    n = evaluation["examples"]
    assert 30 <= n == len(evaluation["data"])  # about TEST_SPLIT of the pairs, split by prompt
    for summary in (tuned, base):
        assert summary["errors"] == 0 and summary["preference_pairs"] == n
    rows = evaluation["data"]
    assert all(r["non_preferred"] and r["reference"] != r["non_preferred"] for r in rows)
    for side in (rows, [r["baseline"] for r in rows]):
        margins = [r["preferred_logprob"] - r["non_preferred_logprob"] for r in side]
        assert all(r["preferred_logprob"] < 0 and r["non_preferred_logprob"] < 0 for r in side)
        assert sum(m > 0 for m in margins) / n == pytest.approx(
            (tuned if side is rows else base)["preference_accuracy"], abs=1e-4
        )

    # The baseline's scores are the SFT model's own: the engine, in this process, agrees.
    from service.training.preference import score_replies

    sft_job = record.load(local.store, sft.id)
    assert sft_job is not None
    prepared = Path((record.load(local.store, dpo.id).prepared or {})["test"])  # type: ignore[union-attr]
    first = json.loads(prepared.read_text(encoding="utf-8").splitlines()[0])
    logprobs, _ = score_replies(
        str(local_state(sft_job).model_dir),
        first["input"]["messages"],
        [first["preferred_output"], first["non_preferred_output"]],
        device="cpu",
    )
    assert logprobs == pytest.approx(
        [rows[0]["baseline"]["preferred_logprob"], rows[0]["baseline"]["non_preferred_logprob"]], abs=1e-3
    )

    # Measured with these seeds: SFT model 0.707 -> DPO 0.829 on 41 held-out pairs (5 pairs more),
    # mean margin 6.7 -> 19.9 nats. The same recipe in-process over 3 splits and 3 SFT/DPO seeds:
    # +3 to +8 pairs of 41-53, margin +6 to +19 nats (docs/benchmarks.md). DPO from the random-weight
    # base instead does not generalise to unseen prompts (docs/local-trainer.md), hence SFT first.
    assert tuned["preference_accuracy"] > base["preference_accuracy"], (tuned, base)
    assert tuned["preference_margin"] > base["preference_margin"] + 2.0, (tuned, base)
