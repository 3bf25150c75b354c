"""Creating local-provider jobs: what the API accepts, and the clear 4xx for what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import preparation, tasknames
from tests.api.test_files import assert_error, auth, upload

CHAT = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"问题{i}"}, {"role": "assistant", "content": f"回答{i}"}]}
    ).encode()
    + b"\n"
    for i in range(12)
)


@pytest.fixture
def ready(client, make_key, store, settings) -> tuple[str, str]:
    token = make_key()
    file_id = upload(client, token, CHAT).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # what the worker runs
    return token, file_id


def create(client, token: str, file_id: str, **body: Any):
    return client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"training_file": file_id, "provider": "local", **body},
    )


def supervised(**hyper: Any) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": hyper}}


@pytest.mark.parametrize(
    "model", ["smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "{data_dir}/models/tiny"]
)
def test_local_job_is_accepted_with_zero_cost(client, ready, dispatcher, settings, model):
    token, file_id = ready
    model = model.format(data_dir=settings.data_dir.resolve())
    r = create(
        client, token, file_id, model=model, method=supervised(n_epochs=2, lora_rank=8, learning_rate=1e-3)
    )
    assert r.status_code == 200, r.json
    job = r.json
    assert job["provider"] == "local" and job["model"] == model and job["status"] == "validating_files"
    assert job["estimate"]["cost_usd"] == 0 and job["estimate"]["n_epochs"] == 2
    assert job["hyperparameters"]["lora_rank"] == 8 and job["hyperparameters"]["learning_rate"] == 1e-3
    assert "local_model_dir" not in job
    assert dispatcher.sent[-1] == (tasknames.JOB_PREPARE, (job["id"],))


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"method": supervised(lora_rank=0)}, 400, "method.supervised.hyperparameters.lora_rank", None),
        ({"method": supervised(lora_dropout=5)}, 400, "method.supervised.hyperparameters.lora_dropout", None),
        ({"method": supervised(n_epochs=1000)}, 400, "method.supervised.hyperparameters.n_epochs", None),
        (
            {"method": supervised(max_seq_length=4)},
            400,
            "method.supervised.hyperparameters.max_seq_length",
            None,
        ),
        (
            {"method": supervised(learning_rate=7)},
            400,
            "method.supervised.hyperparameters.learning_rate",
            None,
        ),
        (
            {"method": supervised(training_type="qlora")},
            400,
            "method.supervised.hyperparameters.training_type",
            None,
        ),
        (
            {"method": supervised(learning_rate=1e-4, learning_rate_multiplier=2)},
            400,
            "method.supervised.hyperparameters.learning_rate",
            "conflicting_hyperparameters",
        ),
        (
            {"method": supervised(training_type="full", lora_rank=8)},
            400,
            "method.supervised.hyperparameters.lora_rank",
            "conflicting_hyperparameters",
        ),
        ({"method": {"type": "dpo", "dpo": {}}}, 422, "method.type", "unsupported_method"),
        ({"model": "not a model id"}, 400, "model", "invalid_model"),
        ({"model": "org/name:tag"}, 400, "model", "invalid_model"),
        ({"model": "/srv/../etc"}, 400, "model", None),
        ({"model": "ft:gpt-4o-mini-2024-07-18:t::ftjob-abc"}, 422, "model", "model_not_supported"),
    ],
)
def test_absurd_local_options_are_clear_4xx(client, ready, dispatcher, body, status, param, code):
    token, file_id = ready
    r = create(client, token, file_id, **{"model": "smollm2-135m", **body})
    assert_error(r, status, "invalid_request_error", param, code)
    assert dispatcher.sent[-1][0] != tasknames.JOB_PREPARE


def test_local_knobs_are_refused_for_other_providers(client, ready):
    token, file_id = ready
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={
            "training_file": file_id,
            "model": "gpt-4o-mini-2024-07-18",
            "provider": "sandbox",
            "method": supervised(lora_rank=8),
        },
    )
    assert_error(
        r,
        400,
        "invalid_request_error",
        "method.supervised.hyperparameters.lora_rank",
        "unsupported_hyperparameter",
    )


@pytest.mark.parametrize("model", ["/srv/models/tiny", "/etc", "{data_dir}/files"])
def test_local_model_directory_outside_the_roots_is_refused(client, ready, dispatcher, settings, model):
    token, file_id = ready
    sent = len(dispatcher.sent)
    r = create(client, token, file_id, model=model.format(data_dir=settings.data_dir.resolve()))
    assert_error(r, 422, "invalid_request_error", param="model", code="model_path_not_allowed")
    assert len(dispatcher.sent) == sent  # nothing started


def test_local_model_roots_setting_allows_a_directory(make_key, store, settings, tmp_path):
    from dataclasses import replace

    from service.app import create_app
    from service.core.dispatch import RecordingDispatcher

    allowed = tmp_path / "shared-models"
    client = create_app(
        replace(settings, local_model_roots=(allowed,)), dispatcher=RecordingDispatcher()
    ).test_client()
    token = make_key()
    file_id = upload(client, token, CHAT).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    assert create(client, token, file_id, model=str(allowed / "tiny")).status_code == 200
    r = create(client, token, file_id, model=str(settings.data_dir.resolve() / "models" / "tiny"))
    assert r.status_code == 422 and r.json["error"]["code"] == "model_path_not_allowed"


def test_priority_is_accepted_and_echoed(client, ready):
    token, file_id = ready
    urgent = create(client, token, file_id, model="smollm2-135m", priority=7)
    assert urgent.status_code == 200, urgent.json
    assert urgent.json["priority"] == 7
    assert client.get(f"/v1/fine_tuning/jobs/{urgent.json['id']}", headers=auth(token)).json["priority"] == 7
    plain = create(client, token, file_id, model="smollm2-135m")
    assert plain.status_code == 200 and plain.json["priority"] == 0


@pytest.mark.parametrize("priority", [1001, -1001, "high", 1.5, True])
def test_a_bad_priority_is_a_400_naming_it(client, ready, priority):
    token, file_id = ready
    r = create(client, token, file_id, model="smollm2-135m", priority=priority)
    assert_error(r, 400, "invalid_request_error", param="priority")
