"""DPO on the local provider through the API: an SFT job, then a DPO job on its ``ft:`` model."""

from __future__ import annotations

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
