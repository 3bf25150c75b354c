"""OpenAI's ``seed`` and ``integrations`` on a create: picked and kept, validated, refused where a
provider cannot honour them, echoed; and what the local trainer's spec makes of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import preparation, tasknames
from service.core.backends.local_run import build_spec, child_env
from service.core.jobs import record
from service.core.jobs.seeds import DEFAULT_SEED, SEED_MAX
from tests.api.test_files import assert_error, auth, upload
from tests.api.test_jobs_local_api import CHAT

MODEL = "gpt-4o-mini-2024-07-18"
WANDB = {"type": "wandb", "wandb": {"project": "funds", "entity": "research", "tags": ["qa", "v1"]}}
MLFLOW = {"type": "mlflow", "mlflow": {"experiment_name": "funds-qa"}}


@pytest.fixture
def ready(client, make_key, store, settings) -> tuple[str, str]:
    """A key and a processed chat file of its tenant."""
    token = make_key()
    file_id = upload(client, token, CHAT).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # what the worker runs
    return token, file_id


def create(client, token: str, file_id: str, **body: Any):
    return client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"model": MODEL, "training_file": file_id, "provider": "sandbox", **body},
    )


def test_a_job_without_a_seed_gets_one_that_it_keeps(client, ready, store):
    token, file_id = ready
    created = create(client, token, file_id)
    assert created.status_code == 200, created.json
    seed = created.json["seed"]
    assert isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX
    url = f"/v1/fine_tuning/jobs/{created.json['id']}"
    assert [client.get(url, headers=auth(token)).json["seed"] for _ in range(2)] == [seed, seed]
    listed = client.get("/v1/fine_tuning/jobs", headers=auth(token)).json["data"]
    assert [j["seed"] for j in listed if j["id"] == created.json["id"]] == [seed]
    assert record.load(store, created.json["id"]).seed == seed  # what the stages use
    other = create(client, token, file_id).json["seed"]
    assert other != seed  # picked per job (two equal picks: a 1 in 2**31 chance)


@pytest.mark.parametrize("seed", [0, 7, SEED_MAX])
def test_a_given_seed_is_kept(client, ready, seed):
    token, file_id = ready
    created = create(client, token, file_id, seed=seed)
    assert created.status_code == 200, created.json
    assert created.json["seed"] == seed
    assert client.get(f"/v1/fine_tuning/jobs/{created.json['id']}", headers=auth(token)).json["seed"] == seed


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, "7", 1.5, True])
def test_a_bad_seed_is_a_400_naming_it(client, ready, seed):
    token, file_id = ready
    assert_error(create(client, token, file_id, seed=seed), 400, "invalid_request_error", "seed")


def test_a_picked_seed_leaves_the_split_on_its_old_default_and_says_so(client, ready):
    """The split follows the caller's seed; without one it stays on 42 (so two such jobs hold out
    the same rows), written into ``prepare`` so that the job object says what a re-run needs."""
    token, file_id = ready
    split = {"split": {"validation": 0.2}}
    picked = create(client, token, file_id, prepare=split).json
    assert picked["prepare"] == {"split": {"validation": 0.2, "seed": DEFAULT_SEED}}
    given = create(client, token, file_id, prepare=split, seed=9).json
    assert given["prepare"] == split and given["seed"] == 9
    own = create(client, token, file_id, prepare={"split": {"validation": 0.2, "seed": 3}}).json
    assert own["prepare"] == {"split": {"validation": 0.2, "seed": 3}}


def test_the_local_spec_trains_with_the_jobs_seed(client, ready, store, settings):
    token, file_id = ready
    for body in ({}, {"seed": 123}):
        job_id = create(client, token, file_id, provider="local", model="smollm2-135m", **body).json["id"]
        job = record.load(store, job_id)
        job.prepared = {"train": "/data/prepared/train.jsonl"}
        spec = build_spec(settings, job, resume=False)
        assert spec["hyperparameters"]["seed"] == job.seed == body.get("seed", job.seed)
        assert spec["integrations"] == {}  # none asked for: the run reports nowhere


@pytest.mark.parametrize(
    ("integrations", "param", "code"),
    [
        ([{"type": "comet"}], "integrations.0.type", "invalid_value"),
        ([{"wandb": {"project": "p"}}], "integrations.0.type", "missing_required_parameter"),
        ([{"type": "wandb"}], "integrations.0.wandb", "missing_required_parameter"),
        ([{"type": "wandb", "wandb": {}}], "integrations.0.wandb.project", "missing_required_parameter"),
        ([{"type": "wandb", "wandb": {"project": ""}}], "integrations.0.wandb.project", "invalid_value"),
        ([{"type": "wandb", "wandb": {"project": 5}}], "integrations.0.wandb.project", "invalid_value"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": [1]}}], "integrations.0.wandb.tags.0", None),
        (
            [{"type": "wandb", "wandb": {"project": "p", "tags": ["t"] * 21}}],
            "integrations.0.wandb.tags",
            "invalid_value",
        ),
        ([{"type": "wandb", "wandb": {"project": "p", "team": "x"}}], "integrations.0.wandb.team", None),
        ([MLFLOW, {"type": "wandb", "wandb": {"name": "n"}}], "integrations.1.wandb.project", None),
        ([{"type": "mlflow", "wandb": {"project": "p"}}], "integrations.0.wandb", "invalid_value"),
        (
            [{"type": "mlflow", "mlflow": {"experiment_name": 3}}],
            "integrations.0.mlflow.experiment_name",
            "invalid_value",
        ),
        ([{"type": "mlflow", "mlflow": {"tracking_uri": "x"}}], "integrations.0.mlflow.tracking_uri", None),
        ({"type": "wandb"}, "integrations", "invalid_value"),
        (["wandb"], "integrations.0", "invalid_value"),
        ([WANDB, MLFLOW, WANDB], "integrations", "invalid_value"),
    ],
)
def test_bad_integrations_are_400s_naming_the_field(client, ready, integrations, param, code):
    token, file_id = ready
    r = create(client, token, file_id, provider="local", model="smollm2-135m", integrations=integrations)
    assert_error(r, 400, "invalid_request_error", param, code)


def test_a_tracker_asked_for_twice_is_refused(client, ready):
    token, file_id = ready
    r = create(client, token, file_id, provider="local", model="smollm2-135m", integrations=[MLFLOW, MLFLOW])
    assert_error(r, 400, "invalid_request_error", "integrations.1.type", "duplicate_integration")


def test_mlflow_is_refused_where_the_provider_cannot_report_to_it(client, ready, dispatcher):
    """OpenAI, Azure and the sandbox (one remote backend) take W&B only."""
    token, file_id = ready
    r = create(client, token, file_id, integrations=[WANDB, MLFLOW])
    assert_error(r, 422, "invalid_request_error", "integrations.1.type", "unsupported_integration")
    assert "mlflow" in r.json["error"]["message"] and "sandbox" in r.json["error"]["message"]
    assert tasknames.JOB_PREPARE not in [task for task, _ in dispatcher.sent]  # nothing started


def test_integrations_are_echoed_and_stored(client, ready, store):
    token, file_id = ready
    remote = create(client, token, file_id, integrations=[WANDB])
    assert remote.status_code == 200, remote.json
    assert remote.json["integrations"] == [WANDB]
    local = create(
        client,
        token,
        file_id,
        provider="local",
        model="smollm2-135m",
        integrations=[{"type": "wandb", "wandb": {"project": "funds", "name": None}}, MLFLOW],
    )
    assert local.status_code == 200, local.json
    echoed = [{"type": "wandb", "wandb": {"project": "funds"}}, MLFLOW]  # unset settings left out
    assert local.json["integrations"] == echoed
    got = client.get(f"/v1/fine_tuning/jobs/{local.json['id']}", headers=auth(token)).json
    assert got["integrations"] == echoed and record.load(store, local.json["id"]).integrations == echoed
    assert create(client, token, file_id).json["integrations"] == []


def test_the_local_spec_says_where_runs_go_and_never_holds_the_wandb_key(client, ready, store, settings):
    token, file_id = ready
    job_id = create(
        client, token, file_id, provider="local", model="smollm2-135m", integrations=[WANDB, MLFLOW]
    ).json["id"]
    job = record.load(store, job_id)
    job.prepared = {"train": "/data/prepared/train.jsonl"}

    spec = build_spec(settings, job, resume=False)["integrations"]
    assert spec["wandb"] == {**WANDB["wandb"], "mode": "offline", "base_url": None}  # no key: offline
    store_dir = (settings.data_dir / "mlflow").resolve()
    assert spec["mlflow"] == {
        "experiment_name": "funds-qa",
        "tracking_uri": f"sqlite:///{store_dir / 'mlflow.db'}",
        "artifact_location": str(store_dir / "artifacts"),
    }
    assert spec["tags"] == {
        "tuneline.job_id": job_id,
        "tuneline.tenant": job.tenant,
        "tuneline.model": job.model,
    }
    assert child_env(settings, job) == {}

    key = "wandb-key-0123456789abcdef0123456789abcdef"
    keyed = settings.with_overrides(
        wandb_api_key=key,
        wandb_base_url="https://wandb.example.org",
        mlflow_tracking_uri="http://mlflow:5000",
    )
    spec = build_spec(keyed, job, resume=False)
    assert spec["integrations"]["wandb"]["mode"] == "online"
    assert spec["integrations"]["wandb"]["base_url"] == "https://wandb.example.org"
    assert spec["integrations"]["mlflow"]["tracking_uri"] == "http://mlflow:5000"
    assert spec["integrations"]["mlflow"]["artifact_location"] is None  # the server decides
    assert key not in json.dumps(spec)
    assert child_env(keyed, job) == {"WANDB_API_KEY": key}  # only the child's environment has it
    job.integrations = [MLFLOW]
    assert child_env(keyed, job) == {}  # a job that does not log to W&B never gets the key
