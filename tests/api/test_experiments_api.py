"""Evaluation and experiments routes over the Flask test client: tables, isolation, bad input."""

from __future__ import annotations

import json

from service.core.preparation import prepare_uploaded_file
from service.core.store import evaluations
from service.core.tasknames import JOB_PREPARE
from tests.api.jobfactory import finished_job
from tests.api.test_files import assert_error, auth, upload

QA = "".join(
    json.dumps(
        {"prompt": f"问题{i}：基金{i}怎么样？", "completion": f"答案{i}：还可以。"}, ensure_ascii=False
    )
    + "\n"
    for i in range(40)
).encode()


def processed(client, token, store, settings, data: bytes = QA, name="train.jsonl") -> str:
    file_id = upload(client, token, data, filename=name).json["id"]
    prepare_uploaded_file(store, settings.data_dir, file_id)  # what the datasets worker runs
    return file_id


def create(client, token, body, **headers):
    return client.post("/v1/experiments", headers={**auth(token), **headers}, json=body)


def test_evaluation_route_pages_rows_and_isolates_tenants(client, make_key, store):
    mine, other = make_key("alpha"), make_key("beta")
    summary = {
        "examples": 3,
        "answered": 3,
        "errors": 0,
        "exact_match": 0.3333,
        "char_f1": 0.5,
        "rouge_l": 0.5,
        "bleu": 20.0,
    }
    job = finished_job(
        store,
        "alpha",
        prepare={"split": {"test": 0.1, "seed": 1}},
        evaluation={
            "status": "completed",
            "examples": 3,
            "metrics": summary,
            "baseline": None,
            "baseline_model": None,
        },
    )
    for i in range(3):
        row = {
            "index": i,
            "prompt": f"问{i}",
            "reference": f"答{i}",
            "answer": f"答{i}" if i == 0 else "不知道",
            "exact_match": 1.0 if i == 0 else 0.0,
            "char_f1": 1.0 if i == 0 else 0.0,
            "rouge_l": 0.0,
            "bleu": 0.0,
        }
        evaluations.put_row(store, job["id"], "model", i, row)
    url = f"/v1/fine_tuning/jobs/{job['id']}/evaluation"
    first = client.get(url + "?limit=2", headers=auth(mine)).json
    assert first["object"] == "fine_tuning.job.evaluation" and first["status"] == "completed"
    assert first["metrics"] == summary and first["model"] == job["fine_tuned_model"]
    assert [r["id"] for r in first["data"]] == ["ex-0", "ex-1"] and first["has_more"] is True
    assert first["data"][0]["answer"] == "答0" and first["data"][0]["reference"] == "答0"
    rest = client.get(url + f"?limit=2&after={first['last_id']}", headers=auth(mine)).json
    assert [r["index"] for r in rest["data"]] == [2] and rest["has_more"] is False
    assert_error(client.get(url, headers=auth(other)), 404, "not_found_error")
    plain = finished_job(store, "alpha")
    assert_error(
        client.get(f"/v1/fine_tuning/jobs/{plain['id']}/evaluation", headers=auth(mine)),
        404,
        "not_found_error",
        code="evaluation_not_found",
    )


def test_a_dpo_evaluation_shows_preference_accuracy_beside_its_starting_models(client, make_key, store):
    token = make_key("alpha")
    generation = {
        "examples": 2,
        "answered": 2,
        "errors": 0,
        "exact_match": 0.0,
        "char_f1": 0.5,
        "rouge_l": 0.5,
    }
    tuned = {
        **generation,
        "bleu": 9.0,
        "preference_accuracy": 1.0,
        "preference_margin": 4.5,
        "preference_pairs": 2,
    }
    base = {
        **generation,
        "bleu": 3.0,
        "preference_accuracy": 0.5,
        "preference_margin": -0.5,
        "preference_pairs": 2,
    }
    job = finished_job(
        store,
        "alpha",
        provider="local",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        prepare={"split": {"test": 0.2, "seed": 1}},
        evaluation={
            "status": "completed",
            "examples": 2,
            "metrics": tuned,
            "baseline": base,
            "baseline_model": "ft:tiny:alpha::ftjob-sft",
        },
    )
    for target, logprobs in (("model", [(-2.0, -6.0), (-3.0, -8.0)]), ("base", [(-4.0, -3.0), (-5.0, -7.0)])):
        for i, (preferred, other) in enumerate(logprobs):
            row = {
                "index": i,
                "prompt": f"问{i}",
                "reference": f"答{i}",
                "non_preferred": f"别的{i}",
                "answer": f"答{i}",
                "exact_match": 0.0,
                "char_f1": 0.5,
                "rouge_l": 0.5,
                "bleu": 0.0,
                "preferred_logprob": preferred,
                "non_preferred_logprob": other,
            }
            evaluations.put_row(store, job["id"], target, i, row)
    got = client.get(f"/v1/fine_tuning/jobs/{job['id']}/evaluation", headers=auth(token)).json
    assert got["metrics"] == tuned and got["baseline"] == base
    assert got["baseline_model"] == "ft:tiny:alpha::ftjob-sft"
    first = got["data"][0]
    assert (first["reference"], first["non_preferred"]) == ("答0", "别的0")
    assert (first["preferred_logprob"], first["non_preferred_logprob"]) == (-2.0, -6.0)
    assert (first["baseline"]["preferred_logprob"], first["baseline"]["non_preferred_logprob"]) == (
        -4.0,
        -3.0,
    )


def test_experiment_starts_one_job_per_candidate_on_identical_split(
    client, make_key, store, settings, dispatcher
):
    token = make_key("alpha")
    training = processed(client, token, store, settings)
    body = {
        "name": "mini vs 4.1-mini",
        "training_file": training,
        "prepare": {"split": {"test": 0.2}},
        "candidates": [
            {"provider": "sandbox", "model": "gpt-4o-mini-2024-07-18"},
            {"provider": "sandbox", "model": "gpt-4.1-mini-2025-04-14", "hyperparameters": {"n_epochs": 2}},
        ],
    }
    r = create(client, token, body)
    assert r.status_code == 200, r.json
    exp = r.json
    assert exp["id"].startswith("exp-") and exp["object"] == "experiment" and exp["status"] == "running"
    rows = exp["candidates"]
    assert [c["model"] for c in rows] == ["gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14"]
    assert [c["index"] for c in rows] == [0, 1] and all(c["status"] == "validating_files" for c in rows)
    assert rows[1]["hyperparameters"] == {"n_epochs": 2}
    job_ids = [c["job_id"] for c in rows]
    assert [s for s in dispatcher.sent if s[0] == JOB_PREPARE] == [(JOB_PREPARE, (j,)) for j in job_ids]
    jobs = [client.get(f"/v1/fine_tuning/jobs/{j}", headers=auth(token)).json for j in job_ids]
    # Same split for every candidate: one explicit seed, the same test fraction.
    assert {json.dumps(j["prepare"], sort_keys=True) for j in jobs} == {
        json.dumps({"split": {"test": 0.2, "seed": 42}}, sort_keys=True)
    }
    assert all(j["experiment_id"] == exp["id"] for j in jobs)
    got = client.get(f"/v1/experiments/{exp['id']}", headers=auth(token)).json
    assert got["candidates"][0]["job_id"] == job_ids[0] and got["examples"] == []
    assert got["best_candidate"] is None
    listing = client.get("/v1/experiments", headers=auth(token)).json
    assert [e["id"] for e in listing["data"]] == [exp["id"]]
    other = make_key("beta")
    assert_error(client.get(f"/v1/experiments/{exp['id']}", headers=auth(other)), 404, "not_found_error")
    assert client.get("/v1/experiments", headers=auth(other)).json["data"] == []


def test_experiment_bad_input_is_4xx_and_starts_nothing(client, make_key, store, settings, dispatcher):
    token = make_key("alpha")
    training = processed(client, token, store, settings)
    broken = processed(client, token, store, settings, b'{"prompt": "a"}\nnot json\n', "broken.jsonl")
    dpo = json.dumps(
        {
            "input": {"messages": [{"role": "user", "content": "问"}]},
            "preferred_output": [{"role": "assistant", "content": "好"}],
            "non_preferred_output": [{"role": "assistant", "content": "坏"}],
        },
        ensure_ascii=False,
    )
    wrong_format = processed(
        client,
        token,
        store,
        settings,
        "".join(dpo.replace("问", f"问{i}") + "\n" for i in range(12)).encode(),
        "dpo.jsonl",
    )
    foreign = finished_job(store, "beta")["fine_tuned_model"]
    candidate = {"provider": "sandbox", "model": "gpt-4o-mini-2024-07-18"}
    split = {"split": {"test": 0.2}}
    cases = [
        (
            {"training_file": training, "prepare": split, "candidates": []},
            400,
            "invalid_request_error",
            "candidates",
        ),
        ({"training_file": training, "prepare": split}, 400, "invalid_request_error", "candidates"),
        ({"training_file": training, "candidates": [candidate]}, 400, "invalid_request_error", "test_file"),
        (
            {"training_file": broken, "prepare": split, "candidates": [candidate]},
            422,
            "invalid_request_error",
            "training_file",
        ),
        (
            {"training_file": training, "test_file": wrong_format, "candidates": [candidate]},
            422,
            "invalid_request_error",
            "test_file",
        ),
        (
            {"training_file": training, "test_file": training, "candidates": [candidate]},
            400,
            "invalid_request_error",
            "test_file",
        ),
        (
            {
                "training_file": training,
                "prepare": split,
                "candidates": [candidate, {"provider": "sandbox", "model": foreign}],
            },
            404,
            "not_found_error",
            "candidates.1.model",
        ),
        (
            {
                "training_file": training,
                "prepare": split,
                "candidates": [{"provider": "sandbox", "model": "gpt-9"}],
            },
            400,
            "invalid_request_error",
            "candidates.0.model",
        ),
        (
            {
                "training_file": training,
                "prepare": split,
                "candidates": [{"model": "gpt-4o-mini-2024-07-18", "hyperparameters": {"n_epochs": 0}}],
            },
            400,
            "invalid_request_error",
            "candidates.0.hyperparameters.n_epochs",
        ),
    ]
    for body, status, type_, param in cases:
        assert_error(create(client, token, body), status, type_, param)
    assert [s for s in dispatcher.sent if s[0] == JOB_PREPARE] == []
    assert client.get("/v1/experiments", headers=auth(token)).json["data"] == []
    assert client.get("/v1/fine_tuning/jobs", headers=auth(token)).json["data"] == []


def test_job_test_file_must_be_held_out_and_same_format(client, make_key, store, settings):
    token = make_key("alpha")
    training = processed(client, token, store, settings)
    body = {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": training,
        "provider": "sandbox",
        "test_file": training,
    }
    r = client.post("/v1/fine_tuning/jobs", headers=auth(token), json=body)
    assert_error(r, 400, "invalid_request_error", "test_file", "invalid_test_file")
    foreign = finished_job(store, "beta")["fine_tuned_model"]
    r = client.post(
        "/v1/fine_tuning/jobs", headers=auth(token), json={**body, "test_file": None, "model": foreign}
    )
    assert r.status_code == 400  # test_file null is not allowed by the schema
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"model": foreign, "training_file": training, "provider": "sandbox"},
    )
    assert_error(r, 404, "not_found_error", "model")
