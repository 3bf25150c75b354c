"""``POST /v1/imports/{id}/retrain`` and ``/distill`` over the Flask test client: one experiment per
imported job with the original model as an evaluate-only candidate, the held-out set chosen per
job, the same request answered again with the same experiments; a distillation started once
within its budget; every refusal naming its field."""

from __future__ import annotations

import dataclasses
import io
import json
import secrets
import time
from typing import Any

import pytest

from service.app import create_app
from service.core.imports import mapping
from service.core.store import imports as repo
from service.core.tasknames import IMPORT_DISTILL, JOB_PREPARE
from service.settings import Settings
from tests.api.test_experiments_api import QA, processed
from tests.api.test_files import assert_error, auth

ACCOUNT_URL = "https://api.openai.example/v1"
LOCAL = {"provider": "local", "model": "smollm2-135m", "hyperparameters": {"n_epochs": 1}}
VALIDATION = "".join(
    json.dumps({"prompt": f"验证{i}：基金{i}呢？", "completion": f"回答{i}。"}, ensure_ascii=False) + "\n"
    for i in range(12)
).encode()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The deployment's openai provider is the account the imports read (its original models)."""
    return dataclasses.replace(settings, openai_api_key="sk-configured", openai_base_url=ACCOUNT_URL)


def make_import(
    store, tenant: str, jobs: list[dict[str, Any]], status: str = "succeeded", base_url: str | None = None
) -> str:
    """An import record and its jobs as the import task leaves them (``mapping`` + one transaction)."""
    now = int(time.time())
    import_id = "imp-" + secrets.token_hex(12)
    doc = {
        "id": import_id,
        "object": "import",
        "tenant": tenant,
        "source": "openai",
        "base_url": base_url,
        "status": status,
        "progress": {},
        "skipped": [],
        "created_at": now,
        "updated_at": now,
    }
    repo.insert(store, doc, now * 1000, None)
    for n, spec in enumerate(jobs):
        raw = {
            "id": spec["id"],
            "status": spec.get("status", "succeeded"),
            "model": "gpt-4o-mini-2024-07-18",
            "created_at": now - 100 + n,
            "finished_at": now - 50 + n,
            "fine_tuned_model": None
            if spec.get("status", "succeeded") != "succeeded"
            else f"ft:gpt-4o-mini-2024-07-18:acme::{spec['id'][-6:]}",
            "hyperparameters": {"n_epochs": 3},
        }
        job = mapping.to_job(
            raw,
            tenant=tenant,
            source="openai",
            account=f"openai:{base_url or ACCOUNT_URL}",
            import_id=import_id,
            training_file=spec.get("training_file"),
            validation_file=spec.get("validation_file"),
            now=now,
        )
        pipe = store.r.pipeline(transaction=True)
        repo.queue_job(pipe, job.to_dict(), [], [], [])
        pipe.execute()
    return import_id


def retrain(client, token, import_id: str, body: dict[str, Any], **headers: str):
    return client.post(f"/v1/imports/{import_id}/retrain", headers={**auth(token), **headers}, json=body)


def get(client, token, path: str) -> dict[str, Any]:
    r = client.get(path, headers=auth(token))
    assert r.status_code == 200, r.data
    return r.json  # type: ignore[no-any-return]


@pytest.fixture
def account(client, make_key, store, settings):
    """An import of three jobs: one trained on a file alone, one with a validation file, one failed."""
    token = make_key("acme")
    training = processed(client, token, store, settings)
    validation = processed(client, token, store, settings, VALIDATION, "valid.jsonl")
    import_id = make_import(
        store,
        "acme",
        [
            {"id": "ftjob-alone1", "training_file": training},
            {"id": "ftjob-valid2", "training_file": training, "validation_file": validation},
            {"id": "ftjob-broke3", "training_file": training, "status": "failed"},
        ],
    )
    return token, import_id, training, validation


def test_one_experiment_per_job_with_the_original_model_beside_the_candidate(
    client, store, dispatcher, account
):
    token, import_id, training, validation = account
    body = {"candidates": [LOCAL], "split": {"test": 0.2, "seed": 7}}
    r = retrain(client, token, import_id, body)
    assert r.status_code == 200, r.json
    out = r.json
    assert out["object"] == "import.retrain" and out["import_id"] == import_id
    assert [d["provider_job_id"] for d in out["data"]] == ["ftjob-alone1", "ftjob-valid2"]
    assert [d["test_set"] for d in out["data"]] == ["split", "validation_file"]
    assert [(s["provider_job_id"], s["code"]) for s in out["skipped"]] == [
        ("ftjob-broke3", "job_not_succeeded")
    ]

    started = []
    for entry in out["data"]:
        exp = get(client, token, f"/v1/experiments/{entry['experiment_id']}")
        assert exp["import_id"] == import_id and exp["imported_job_id"] == entry["job_id"]
        assert exp["training_file"] == training and exp["status"] == "running"
        local, original = exp["candidates"]
        assert (local["provider"], local["model"], local["evaluate_only"]) == ("local", "smollm2-135m", False)
        assert original["evaluate_only"] is True and original["provider"] == "openai"
        assert original["model"] == original["fine_tuned_model"] == entry["fine_tuned_model"]
        assert original["estimated_cost_usd"] == 0
        jobs = [get(client, token, f"/v1/fine_tuning/jobs/{c['job_id']}") for c in exp["candidates"]]
        assert jobs[1]["evaluated_model"] == entry["fine_tuned_model"]
        assert jobs[1]["evaluated_job"] == entry["job_id"] and jobs[1]["fine_tuned_model"] is None
        assert "evaluated_model" not in jobs[0]
        # Both candidates hold out the same examples: one split (same seed), or the same file.
        if entry["test_set"] == "split":
            assert [j["prepare"] for j in jobs] == [{"split": {"test": 0.2, "seed": 7}}] * 2
            assert [j["test_file"] for j in jobs] == [None, None]
        else:
            assert [j["test_file"] for j in jobs] == [validation, validation]
            assert [j["prepare"] for j in jobs] == [None, None]
        assert all(j["metadata"] == {"import_id": import_id, "imported_job": entry["job_id"]} for j in jobs)
        started += [c["job_id"] for c in exp["candidates"]]
    assert [s for s in dispatcher.sent if s[0] == JOB_PREPARE] == [(JOB_PREPARE, (j,)) for j in started]

    # The import shows its re-training.
    shown = get(client, token, f"/v1/imports/{import_id}")
    assert shown["retrain"] == {"data": out["data"], "skipped": out["skipped"]}

    # The same request again: the same experiments, nothing started twice.
    again = retrain(client, token, import_id, body)
    assert again.status_code == 200 and again.json == out
    # A default left out is the same request.
    assert retrain(client, token, import_id, {**body, "include_original": True}).json == out
    assert len([s for s in dispatcher.sent if s[0] == JOB_PREPARE]) == len(started)
    # Another request: refused, naming the experiments there are.
    other = retrain(client, token, import_id, {"candidates": [LOCAL], "split": {"test": 0.3}})
    assert_error(other, 409, "conflict_error", param="import_id", code="import_already_retrained")
    assert out["data"][0]["experiment_id"] in other.json["error"]["message"]
    assert other.headers["x-should-retry"] == "false"


def test_an_imported_model_is_one_of_the_tenants_models_and_an_evaluate_only_candidate(
    client, store, account
):
    token, _, training, _ = account
    model = "ft:gpt-4o-mini-2024-07-18:acme::alone1"
    assert get(client, token, f"/v1/models/{model}")["provider"] == "openai"
    base = {"training_file": training, "prepare": {"split": {"test": 0.2}}}
    made = client.post(
        "/v1/experiments",
        headers=auth(token),
        json={**base, "candidates": [LOCAL, {"model": model, "evaluate_only": True}]},
    )
    assert made.status_code == 200, made.json
    assert [c["evaluate_only"] for c in made.json["candidates"]] == [False, True]

    def refused(candidate: dict[str, Any], status: int, param: str, code: str | None = None) -> None:
        r = client.post(
            "/v1/experiments", headers=auth(token), json={**base, "candidates": [LOCAL, candidate]}
        )
        assert_error(r, status, "invalid_request_error" if status != 404 else "not_found_error", param, code)

    only = {"model": model, "evaluate_only": True}
    refused({**only, "hyperparameters": {"n_epochs": 2}}, 400, "candidates.1.hyperparameters")
    refused({**only, "suffix": "x"}, 400, "candidates.1.suffix", "invalid_evaluate_only")
    refused({**only, "provider": "local"}, 400, "candidates.1.provider", "invalid_provider")
    refused(
        {"model": "ft:gpt-4o-mini-2024-07-18:acme::nosuch", "evaluate_only": True}, 404, "candidates.1.model"
    )
    # Another tenant's imported model is not this tenant's.
    make_import(store, "beta", [{"id": "ftjob-theirs", "training_file": training}])
    refused(
        {"model": "ft:gpt-4o-mini-2024-07-18:acme::theirs", "evaluate_only": True}, 404, "candidates.1.model"
    )


def test_refusals_name_the_field(client, make_key, store, settings, account):
    token, import_id, training, _ = account
    body = {"candidates": [LOCAL]}
    assert_error(
        retrain(client, token, import_id, {"candidates": [{"provider": "gcp", "model": "m"}]}),
        400,
        "invalid_request_error",
        param="candidates.0.provider",
    )
    assert_error(
        retrain(client, token, import_id, {"candidates": [{"provider": "local", "model": "/etc/x"}]}),
        422,
        "invalid_request_error",
        param="candidates.0.model",
        code="model_path_not_allowed",
    )
    assert_error(
        retrain(client, token, import_id, {"candidates": []}), 400, "invalid_request_error", "candidates"
    )
    assert_error(
        retrain(client, token, import_id, {**body, "split": {"test": 0.9}}),
        400,
        "invalid_request_error",
        "split.test",
    )
    assert_error(
        retrain(client, token, import_id, {**body, "jobs": ["ftjob-nosuch"]}),
        422,
        "invalid_request_error",
        param="jobs.0",
        code="job_not_in_import",
    )
    assert_error(
        retrain(client, token, import_id, {**body, "jobs": ["ftjob-alone1", "ftjob-broke3"]}),
        422,
        "invalid_request_error",
        param="jobs.1",
        code="job_not_succeeded",
    )
    assert_error(
        retrain(client, token, "imp-nosuch", body),
        404,
        "not_found_error",
        param="import_id",
        code="import_not_found",
    )
    assert_error(
        retrain(client, make_key("beta"), import_id, body),
        404,
        "not_found_error",
        param="import_id",
        code="import_not_found",
    )
    running = make_import(store, "acme", [{"id": "ftjob-run4", "training_file": training}], status="running")
    r = retrain(client, token, running, body)
    assert_error(r, 409, "conflict_error", param="import_id", code="import_not_finished")
    assert r.headers["x-should-retry"] == "false"
    # The account could not give the job's training file: nothing to re-train it on.
    fileless = make_import(store, "acme", [{"id": "ftjob-nofile5"}])
    assert_error(
        retrain(client, token, fileless, {**body, "jobs": ["ftjob-nofile5"]}),
        422,
        "invalid_request_error",
        param="jobs.0",
        code="training_file_missing",
    )
    nothing = retrain(client, token, fileless, body)
    assert_error(nothing, 422, "invalid_request_error", param="import_id", code="no_retrainable_jobs")
    assert "ftjob-nofile5" in nothing.json["error"]["message"]
    # Imported from an account this deployment does not serve: its original models cannot answer.
    elsewhere = make_import(
        store, "acme", [{"id": "ftjob-else6", "training_file": training}], base_url="https://other.example/v1"
    )
    assert_error(
        retrain(client, token, elsewhere, body),
        422,
        "invalid_request_error",
        param="include_original",
        code="original_model_not_served",
    )
    # ... and without them it re-trains.
    assert retrain(client, token, elsewhere, {**body, "include_original": False}).status_code == 200
    # A file still being prepared: retry later.
    pending = client.post(
        "/v1/files",
        headers=auth(token),
        data={"purpose": "fine-tune", "file": (io.BytesIO(QA), "late.jsonl")},
        content_type="multipart/form-data",
    ).json["id"]
    late = make_import(store, "acme", [{"id": "ftjob-late7", "training_file": pending}])
    assert_error(
        retrain(client, token, late, body), 422, "invalid_request_error", "import_id", "file_not_ready"
    )


def test_without_the_provider_configured_the_original_cannot_be_evaluated(
    store, settings, dispatcher, account
):
    token, import_id, _, _ = account
    bare = create_app(dataclasses.replace(settings, openai_api_key=""), dispatcher=dispatcher)
    bare.testing = True
    r = retrain(bare.test_client(), token, import_id, {"candidates": [LOCAL]})
    assert_error(r, 422, "invalid_request_error", param="include_original", code="provider_not_configured")
    assert "include_original: false" in r.json["error"]["message"]


def distill(client, token, import_id: str, body: dict[str, Any]):
    return client.post(f"/v1/imports/{import_id}/distill", headers=auth(token), json=body)


def test_distill_starts_once_within_its_budget(client, store, dispatcher, account):
    token, import_id, _, _ = account
    started = distill(client, token, import_id, {"max_cost_usd": 1.0})
    assert started.status_code == 202, started.json
    body = started.json
    assert body["object"] == "import.distill" and body["status"] == "queued" and body["spent_usd"] == 0
    assert [j["provider_job_id"] for j in body["jobs"]] == ["ftjob-alone1", "ftjob-valid2"]
    assert all(j["prompts"] == 40 and j["file_id"] is None for j in body["jobs"])
    assert 0 < body["estimated_cost_usd"] < 1.0
    assert [s["code"] for s in body["skipped"]] == ["job_not_succeeded"]
    assert [s for s in dispatcher.sent if s[0] == IMPORT_DISTILL] == [(IMPORT_DISTILL, (import_id,))]
    shown = get(client, token, f"/v1/imports/{import_id}")["distill"]
    assert shown == {k: v for k, v in body.items() if k not in ("object", "import_id")}
    assert distill(client, token, import_id, {"max_cost_usd": 1.0}).json == body
    assert_error(
        distill(client, token, import_id, {"max_cost_usd": 2.0}),
        409,
        "conflict_error",
        param="import_id",
        code="import_already_distilled",
    )
    assert len([s for s in dispatcher.sent if s[0] == IMPORT_DISTILL]) == 1


def test_distill_refusals_name_the_field(client, store, settings, dispatcher, account):
    token, import_id, training, _ = account
    assert_error(distill(client, token, import_id, {}), 400, "invalid_request_error", "max_cost_usd")
    assert_error(
        distill(client, token, import_id, {"max_cost_usd": 0}), 400, "invalid_request_error", "max_cost_usd"
    )
    assert_error(
        distill(client, token, import_id, {"max_cost_usd": "5"}), 400, "invalid_request_error", "max_cost_usd"
    )
    over = distill(client, token, import_id, {"max_cost_usd": 0.000001})
    assert_error(over, 422, "invalid_request_error", param="max_cost_usd", code="budget_exceeded")
    assert "80 prompts" in over.json["error"]["message"]
    assert_error(
        distill(client, token, import_id, {"max_cost_usd": 1, "jobs": ["ftjob-broke3"]}),
        422,
        "invalid_request_error",
        param="jobs.0",
        code="job_not_succeeded",
    )
    running = make_import(store, "acme", [{"id": "ftjob-run8", "training_file": training}], status="running")
    assert_error(distill(client, token, running, {"max_cost_usd": 1}), 409, "conflict_error", "import_id")
    bare = create_app(dataclasses.replace(settings, openai_api_key=""), dispatcher=dispatcher)
    bare.testing = True
    assert_error(
        distill(bare.test_client(), token, import_id, {"max_cost_usd": 1}),
        422,
        "invalid_request_error",
        param="import_id",
        code="provider_not_configured",
    )
    assert not [s for s in dispatcher.sent if s[0] == IMPORT_DISTILL]
