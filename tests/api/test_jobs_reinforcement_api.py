"""Creating reinforcement jobs: OpenAI's request on the local provider (its grader checked where
Tuneline runs it), the samples x steps estimate, clear 4xx naming the field, and the request
forwarded unchanged to an OpenAI-shaped provider."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import preparation, tasknames
from service.core.jobs import record
from tests.api.test_files import assert_error, auth, upload

KEYWORD_GRADER = {
    "type": "string_check",
    "name": "mentions gold",
    "input": "{{sample.output_text}}",
    "reference": "{{item.keyword}}",
    "operation": "like",
}
ROWS = b"".join(
    json.dumps({"messages": [{"role": "user", "content": f"问题{i}"}], "keyword": "黄金"}).encode() + b"\n"
    for i in range(12)
)
CHAT = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"问题{i}"}, {"role": "assistant", "content": f"回答{i}"}]}
    ).encode()
    + b"\n"
    for i in range(12)
)


def reinforcement(grader: Any = None, **hyper: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {"grader": KEYWORD_GRADER if grader is None else grader}
    if hyper:
        detail["hyperparameters"] = hyper
    return {"type": "reinforcement", "reinforcement": detail}


@pytest.fixture
def token(make_key) -> str:
    return str(make_key())


def _prepared(client, store, settings, token: str, data: bytes) -> str:
    file_id = upload(client, token, data).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # what the worker runs
    return str(file_id)


@pytest.fixture
def rows_file(client, store, settings, token) -> str:
    return _prepared(client, store, settings, token, ROWS)


def create(client, token: str, file_id: str, provider: str = "local", **body: Any):
    body = {"model": "smollm2-135m" if provider == "local" else "gpt-4o-mini-2024-07-18", **body}
    return client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"training_file": file_id, "provider": provider, **body},
    )


def test_reinforcement_rows_are_a_processed_file_with_their_fields(store, rows_file) -> None:
    report = preparation.get_report(store, rows_file)
    assert report["format"] == "reinforcement" and report["status"] == "processed", report["status_details"]
    # What a run with the defaults samples: 12 prompts answered 4 times each, in steps of 4 prompts.
    estimate = report["estimate"]["reinforcement"]
    assert (estimate["prompts"], estimate["num_generations"], estimate["batch_size"]) == (12, 4, 4)
    n_epochs = report["estimate"]["n_epochs"]
    assert estimate["samples"] == 12 * 4 * n_epochs and estimate["steps"] == 3 * n_epochs


def test_local_reinforcement_job_is_accepted_with_its_estimate(client, dispatcher, token, rows_file) -> None:
    method = reinforcement(n_epochs=2, batch_size=3, compute_multiplier=2, max_completion_length=64, beta=0)
    r = create(client, token, rows_file, method=method)
    assert r.status_code == 200, r.json
    job = r.json
    assert job["method"] == method and job["estimate"]["cost_usd"] == 0
    # 12 prompts in steps of 3, each answered 8 times (compute_multiplier 2 x 4), for 2 epochs.
    assert job["estimate"]["reinforcement"] == {
        "prompts": 12,
        "n_epochs": 2,
        "batch_size": 3,
        "num_generations": 8,
        "steps": 8,
        "samples": 12 * 8 * 2,
        "max_completion_length": 64,
        "max_generated_tokens": 12 * 8 * 2 * 64,
    }
    assert job["hyperparameters"]["compute_multiplier"] == 2 and job["hyperparameters"]["beta"] == 0
    assert dispatcher.sent[-1] == (tasknames.JOB_PREPARE, (job["id"],))


@pytest.mark.parametrize(
    ("method", "status", "param", "code"),
    [
        ({"type": "reinforcement"}, 400, "method.reinforcement.grader", "missing_required_parameter"),
        (
            {"type": "reinforcement", "reinforcement": {"hyperparameters": {}}},
            400,
            "method.reinforcement.grader",
            "missing_required_parameter",
        ),
        (
            reinforcement({**KEYWORD_GRADER, "operation": "gt"}),
            400,
            "method.reinforcement.grader.operation",
            None,
        ),
        (
            reinforcement({**KEYWORD_GRADER, "reference": "{{ answer }}"}),
            400,
            "method.reinforcement.grader.reference",
            "invalid_template",
        ),
        (
            reinforcement(
                {
                    "type": "score_model",
                    "name": "j",
                    "model": "ft:x",
                    "input": [{"role": "user", "content": "?"}],
                }
            ),
            422,
            "method.reinforcement.grader.model",
            "judge_unavailable",
        ),
        (
            reinforcement(
                {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1\n"}
            ),
            422,
            "method.reinforcement.grader.type",
            "python_grader_disabled",
        ),
        (
            reinforcement(reasoning_effort="high"),
            422,
            "method.reinforcement.hyperparameters.reasoning_effort",
            "unsupported_hyperparameter",
        ),
        (
            reinforcement(compute_multiplier=100),
            400,
            "method.reinforcement.hyperparameters.compute_multiplier",
            None,
        ),
        (reinforcement(eval_samples=0), 400, "method.reinforcement.hyperparameters.eval_samples", None),
        (reinforcement(beta=-1), 400, "method.reinforcement.hyperparameters.beta", None),
        (
            reinforcement(max_completion_length=0),
            400,
            "method.reinforcement.hyperparameters.max_completion_length",
            None,
        ),
        (
            {"type": "supervised", "supervised": {"hyperparameters": {"compute_multiplier": 2}}},
            400,
            "method.supervised.hyperparameters.compute_multiplier",
            None,
        ),
        # Reinforcement rows are no supervised data.
        ({"type": "supervised"}, 422, "training_file", "invalid_training_file"),
    ],
)
def test_bad_reinforcement_requests_name_the_field(
    client, dispatcher, token, rows_file, method, status, param, code
):
    sent = len(dispatcher.sent)
    r = create(client, token, rows_file, method=method)
    assert_error(r, status, "invalid_request_error", param, code)
    assert len(dispatcher.sent) == sent  # nothing started


def test_chat_rows_are_no_reinforcement_data(client, store, settings, token) -> None:
    chat = _prepared(client, store, settings, token, CHAT)
    r = create(client, token, chat, method=reinforcement())
    assert_error(r, 422, "invalid_request_error", "training_file", "invalid_training_file")
    assert "reinforcement rows" in r.json["error"]["message"]


def test_a_held_out_split_needs_a_grader_tuneline_can_run(client, token, rows_file) -> None:
    """The remote provider trains with any grader, but the held-out evaluation is scored here."""
    judge = {
        "type": "score_model",
        "name": "j",
        "model": "gpt-4o",
        "input": [{"role": "user", "content": "?"}],
    }
    split = {"prepare": {"split": {"test": 0.2}}}
    r = create(client, token, rows_file, provider="sandbox", method=reinforcement(judge), **split)
    assert_error(r, 422, "invalid_request_error", "method.reinforcement.grader.model", "judge_unavailable")
    assert (
        create(client, token, rows_file, provider="sandbox", method=reinforcement(judge)).status_code == 200
    )
    assert create(client, token, rows_file, method=reinforcement(), **split).status_code == 200


def test_reinforcement_on_a_remote_provider_is_forwarded_unchanged(client, store, token, rows_file) -> None:
    # A grader only the provider runs (python, switched off here) is its business.
    python = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1\n"}
    method = reinforcement(python, n_epochs=1, compute_multiplier=2, eval_interval=5, reasoning_effort="low")
    r = create(client, token, rows_file, provider="sandbox", method=method)
    assert r.status_code == 200, r.json
    assert record.load(store, r.json["id"]).method == method


@pytest.mark.parametrize("knob", [{"beta": 0.1}, {"max_completion_length": 64}, {"lora_rank": 8}])
def test_local_reinforcement_knobs_are_refused_for_other_providers(client, token, rows_file, knob) -> None:
    r = create(client, token, rows_file, provider="sandbox", method=reinforcement(**knob))
    name = next(iter(knob))
    assert_error(
        r,
        400,
        "invalid_request_error",
        f"method.reinforcement.hyperparameters.{name}",
        "unsupported_hyperparameter",
    )


def test_metrics_route_serves_grpo_figures_and_each_named_graders_score(client, store, make_key) -> None:
    from service.core.jobs.metrics import reinforcement_columns
    from service.core.store import jobs as repo
    from tests.api.jobfactory import finished_job
    from tests.api.test_ops_api import png_size

    token = make_key("carol")
    multi = {
        "type": "multi",
        "name": "m",
        "graders": {"exact": KEYWORD_GRADER, "close": {**KEYWORD_GRADER, "operation": "ilike"}},
        "calculate_output": "exact * close",
    }
    job = finished_job(
        store, "carol", provider="local", method={"type": "reinforcement", "reinforcement": {"grader": multi}}
    )
    columns = reinforcement_columns(("exact", "close"))
    rows = [
        {
            "step": s,
            "train_loss": 0.01 * s,
            "train_reward_mean": s / 10,
            "train_reward_std": 0.3,
            "train_completion_length": 4.0,
            "train_kl": 0.001 * s,
            "train_grader_exact": s / 10,
            "train_grader_close": 1.0,
            "valid_reward_mean": 0.5 if s == 5 else None,
        }
        for s in range(1, 6)
    ]
    repo.put_metrics(store, job["id"], [{name: r.get(name) for name in columns} for r in rows])
    url = f"/v1/fine_tuning/jobs/{job['id']}/metrics"
    data = client.get(url, headers=auth(token)).json["data"]
    assert [r["step"] for r in data] == [1, 2, 3, 4, 5]
    assert data[2]["train_reward_mean"] == 0.3 and data[2]["train_grader_exact"] == 0.3
    assert data[4]["valid_reward_mean"] == 0.5 and data[4]["train_kl"] == 0.005
    assert set(columns) <= set(data[0])
    csv_text = client.get(f"{url}?format=csv", headers=auth(token)).get_data(as_text=True)
    assert csv_text.splitlines()[0] == ",".join(columns)
    assert csv_text.splitlines()[3].split(",")[columns.index("train_grader_exact")] == "0.3"
    png = client.get(f"{url}?format=png", headers=auth(token))
    assert png.status_code == 200 and png_size(png.data) == (800, 600)
