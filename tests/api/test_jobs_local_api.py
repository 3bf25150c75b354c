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
        ({"method": {"type": "dpo", "dpo": {}}}, 422, "training_file", "invalid_training_file"),
        ({"method": supervised(beta=0.2)}, 400, "method.supervised.hyperparameters.beta", None),
        ({"model": "not a model id"}, 400, "model", "invalid_model"),
        ({"model": "org/name:tag"}, 400, "model", "invalid_model"),
        ({"model": "/srv/../etc"}, 400, "model", None),
        ({"model": "ft:gpt-4o-mini-2024-07-18:t::ftjob-abc"}, 404, "model", "model_not_found"),
    ],
)
def test_absurd_local_options_are_clear_4xx(client, ready, dispatcher, body, status, param, code):
    token, file_id = ready
    r = create(client, token, file_id, **{"model": "smollm2-135m", **body})
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert_error(r, status, kind, param, code)
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


PREFERENCE = b"".join(
    json.dumps(
        {
            "input": {"messages": [{"role": "user", "content": f"问题{i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"回答{i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"别的{i}"}],
        }
    ).encode()
    + b"\n"
    for i in range(12)
)


def dpo(**hyper: Any) -> dict[str, Any]:
    return {"type": "dpo", "dpo": {"hyperparameters": hyper}}


@pytest.fixture
def preference_file(client, ready, store, settings) -> str:
    token, _ = ready
    file_id = upload(client, token, PREFERENCE).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    assert preparation.get_report(store, file_id)["format"] == "preference"
    return file_id


def test_local_dpo_job_is_accepted_with_its_hyperparameters(client, ready, preference_file, settings):
    token, _ = ready
    r = create(
        client, token, preference_file, model="smollm2-135m", method=dpo(beta=0.25, n_epochs=2, lora_rank=4)
    )
    assert r.status_code == 200, r.json
    assert r.json["method"]["type"] == "dpo"
    assert r.json["hyperparameters"]["beta"] == 0.25 and r.json["hyperparameters"]["lora_rank"] == 4


@pytest.mark.parametrize(
    ("method", "status", "param", "code"),
    [
        (dpo(beta=5), 400, "method.dpo.hyperparameters.beta", None),
        (dpo(beta="high"), 400, "method.dpo.hyperparameters.beta", None),
        (dpo(n_epochs=0), 400, "method.dpo.hyperparameters.n_epochs", None),
        (
            dpo(learning_rate=1e-4, learning_rate_multiplier=2),
            400,
            "method.dpo.hyperparameters.learning_rate",
            "conflicting_hyperparameters",
        ),
        (supervised(n_epochs=1), 422, "training_file", "invalid_training_file"),
    ],
)
def test_bad_dpo_requests_name_the_field(client, ready, preference_file, method, status, param, code):
    token, _ = ready
    extra = {"prepare": method["prepare"]} if "prepare" in method else {}
    method = {k: v for k, v in method.items() if k != "prepare"}
    r = create(client, token, preference_file, model="smollm2-135m", method=method, **extra)
    assert_error(r, status, "invalid_request_error", param, code)


def test_a_dpo_job_holds_out_preference_rows_for_its_evaluation(
    client, ready, preference_file, store, settings
):
    token, chat_file = ready
    split = create(
        client, token, preference_file, model="smollm2-135m", method=dpo(), prepare={"split": {"test": 0.2}}
    )
    assert split.status_code == 200, split.json
    assert split.json["prepare"]["split"]["test"] == 0.2

    test_file = upload(client, token, PREFERENCE.replace("问题".encode(), "测试".encode())).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, test_file)
    held_out = create(client, token, preference_file, model="smollm2-135m", method=dpo(), test_file=test_file)
    assert held_out.status_code == 200, held_out.json
    assert held_out.json["test_file"] == test_file

    # A test set in another format than the method evaluates is refused, naming the field.
    chat_test = create(
        client, token, preference_file, model="smollm2-135m", method=dpo(), test_file=chat_file
    )
    assert_error(chat_test, 422, "invalid_request_error", "test_file", "invalid_test_file")
    assert "preferred_output" in chat_test.json["error"]["message"]
    sft_test = create(
        client, token, chat_file, model="smollm2-135m", method=supervised(), test_file=test_file
    )
    assert_error(sft_test, 422, "invalid_request_error", "test_file", "invalid_test_file")


def _finished(store, job_id: str, provider_model_dir: str | None) -> str:
    """Mark a created job trained (as finalize would), returning its fine-tuned model name."""
    from service.core.backends.local import LocalState
    from service.core.jobs import record
    from service.core.jobs.naming import fine_tuned_model_name

    def done(job) -> None:
        job.fine_tuned_model = fine_tuned_model_name(job.model, job.tenant, job.suffix, job.id)
        job.status, job.stage = "succeeded", "done"
        if isinstance(job.state, LocalState):
            job.state.model_dir = provider_model_dir

    return record.modify(store, job_id, done).fine_tuned_model


def test_dpo_may_continue_the_callers_own_local_model(client, ready, preference_file, store, make_key):
    from service.core.backends.local import local_state
    from service.core.jobs import record

    token, chat_file = ready
    sft = create(client, token, chat_file, model="smollm2-135m").json
    model = _finished(store, sft["id"], "/data/jobs/x/output/model")
    r = create(client, token, preference_file, model=model, method=dpo(beta=0.1))
    assert r.status_code == 200, r.json
    state = local_state(record.load(store, r.json["id"]))
    assert state.from_model == "/data/jobs/x/output/model" and state.base_model == "smollm2-135m"
    # Another tenant cannot name it: the same 404 as for a model that never existed.
    other = make_key()
    other_file = upload(client, other, PREFERENCE).json["id"]
    r = create(client, other, other_file, model=model, method=dpo())
    assert_error(r, 404, "not_found_error", "model", "model_not_found")


def test_local_provider_refuses_a_model_another_provider_trained(client, ready, preference_file, store):
    token, chat_file = ready
    remote = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"training_file": chat_file, "model": "gpt-4o-mini-2024-07-18", "provider": "sandbox"},
    ).json
    model = _finished(store, remote["id"], None)
    r = create(client, token, preference_file, model=model, method=dpo())
    assert_error(r, 422, "invalid_request_error", "model", "model_not_supported")


def test_dpo_on_a_remote_provider_is_forwarded_unchanged(client, ready, preference_file, store):
    from service.core.jobs import record

    token, _ = ready
    method = dpo(beta=0.3, n_epochs=1)
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={
            "training_file": preference_file,
            "model": "gpt-4o-mini-2024-07-18",
            "provider": "sandbox",
            "method": method,
        },
    )
    assert r.status_code == 200, r.json
    assert record.load(store, r.json["id"]).method == method


def test_a_dpo_estimate_counts_both_outputs(client, ready, store, settings):
    """The report's billed tokens of a preference row count its input and both outputs, and a
    hosted provider's estimate bills them."""
    token, _ = ready
    rows = [json.loads(line) for line in PREFERENCE.splitlines()]
    for row in rows:
        row["non_preferred_output"][0]["content"] *= 50
    long_reject = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    ids = []
    for data in (PREFERENCE, long_reject):
        file_id = upload(client, token, data).json["id"]
        preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
        ids.append(file_id)
    billed = [preparation.get_report(store, i)["tokens"]["billed_per_epoch"] for i in ids]
    assert billed[1] > billed[0] + 12 * 40  # 12 rows, each non-preferred output about 50 tokens longer
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={
            "training_file": ids[1],
            "model": "gpt-4o-mini-2024-07-18",
            "provider": "sandbox",
            "method": dpo(n_epochs=2),
        },
    )
    assert r.status_code == 200, r.json
    assert r.json["estimate"]["billed_tokens"] == billed[1] * 2 and r.json["estimate"]["cost_usd"] > 0
