"""The ``compute`` extension at create: checked, resolved with the default executor, echoed on the
job, and refused (naming the field) where it cannot be honoured."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from service.app import create_app
from service.core import preparation, tasknames
from service.core.dispatch import RecordingDispatcher
from tests.api.test_files import assert_error, auth, upload
from tests.api.test_jobs_local_api import CHAT


@pytest.fixture
def ready(client, make_key, store, settings) -> tuple[str, str]:
    token = make_key()
    file_id = upload(client, token, CHAT).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    return token, file_id


def create(client, token: str, file_id: str, **body: Any):
    return client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"training_file": file_id, "model": "smollm2-135m", "provider": "local", **body},
    )


@pytest.mark.parametrize(
    ("compute", "echoed"),
    [
        (None, {"executor": "process", "num_workers": 1}),
        ({}, {"executor": "process", "num_workers": 1}),
        ({"executor": "process", "num_workers": 1}, {"executor": "process", "num_workers": 1}),
        ({"executor": "ray"}, {"executor": "ray", "num_workers": 1, "gpus_per_worker": 0.0}),
        (
            {"executor": "ray", "num_workers": 4, "gpus_per_worker": 0.5},
            {"executor": "ray", "num_workers": 4, "gpus_per_worker": 0.5},
        ),
    ],
)
def test_compute_is_resolved_and_echoed(client, ready, compute, echoed):
    token, file_id = ready
    r = create(client, token, file_id, **({} if compute is None else {"compute": compute}))
    assert r.status_code == 200, r.json
    assert r.json["compute"] == echoed
    assert client.get(f"/v1/fine_tuning/jobs/{r.json['id']}", headers=auth(token)).json["compute"] == echoed


def test_the_default_executor_comes_from_the_setting(make_key, store, settings):
    app = create_app(replace(settings, train_executor="ray"), dispatcher=RecordingDispatcher())
    client = app.test_client()
    token = make_key()
    file_id = upload(client, token, CHAT).json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    r = create(client, token, file_id, compute={"num_workers": 2})
    assert r.status_code == 200, r.json
    assert r.json["compute"] == {"executor": "ray", "num_workers": 2, "gpus_per_worker": 0.0}
    # A job may still choose the process executor.
    r = create(client, token, file_id, compute={"executor": "process"})
    assert r.status_code == 200 and r.json["compute"]["executor"] == "process"


@pytest.mark.parametrize(
    ("compute", "status", "param", "code"),
    [
        ({"executor": "slurm"}, 400, "compute.executor", None),
        ({"executor": "ray", "num_workers": 0}, 400, "compute.num_workers", None),
        ({"executor": "ray", "num_workers": 2.5}, 400, "compute.num_workers", None),
        ({"executor": "ray", "num_workers": "2"}, 400, "compute.num_workers", None),
        ({"executor": "ray", "gpus_per_worker": -1}, 400, "compute.gpus_per_worker", None),
        ({"executor": "ray", "gpus_per_worker": True}, 400, "compute.gpus_per_worker", None),
        ({"executor": "ray", "nodes": 2}, 400, "compute.nodes", "unknown_parameter"),
        ("ray", 400, "compute", None),
        # The process executor trains in one process on its worker's device.
        ({"num_workers": 2}, 422, "compute.num_workers", "compute_not_supported"),
        (
            {"executor": "process", "gpus_per_worker": 1},
            422,
            "compute.gpus_per_worker",
            "compute_not_supported",
        ),
    ],
)
def test_bad_compute_is_a_clear_4xx_naming_the_field(client, ready, dispatcher, compute, status, param, code):
    token, file_id = ready
    sent = len(dispatcher.sent)
    r = create(client, token, file_id, compute=compute)
    assert_error(r, status, "invalid_request_error", param, code)
    assert len(dispatcher.sent) == sent  # nothing started


def test_a_remote_provider_refuses_compute(client, ready, dispatcher):
    token, file_id = ready
    remote = {"provider": "sandbox", "model": "gpt-4o-mini-2024-07-18"}
    r = create(client, token, file_id, **remote, compute={"executor": "ray"})
    assert_error(r, 422, "invalid_request_error", "compute", "compute_not_supported")
    assert "sandbox" in r.json["error"]["message"]
    plain = create(client, token, file_id, **remote)
    assert plain.status_code == 200, plain.json
    assert "compute" not in plain.json  # only jobs Tuneline trains itself carry it
    assert dispatcher.sent[-1] == (tasknames.JOB_PREPARE, (plain.json["id"],))


def test_experiment_candidates_take_compute_like_jobs(client, ready, dispatcher):
    token, file_id = ready
    body = {
        "training_file": file_id,
        "prepare": {"split": {"test": 0.2}},
        "candidates": [
            {"provider": "local", "model": "smollm2-135m", "compute": {"executor": "ray", "num_workers": 2}},
            {"provider": "local", "model": "smollm2-135m"},
        ],
    }
    r = client.post("/v1/experiments", headers=auth(token), json=body)
    assert r.status_code == 200, r.json
    ray = {"executor": "ray", "num_workers": 2, "gpus_per_worker": 0.0}
    assert [c.get("compute") for c in r.json["candidates"]] == [
        ray,
        {"executor": "process", "num_workers": 1},
    ]
    job = client.get(f"/v1/fine_tuning/jobs/{r.json['candidates'][0]['job_id']}", headers=auth(token)).json
    assert job["compute"] == ray

    sent = len(dispatcher.sent)
    bad = {
        **body,
        "candidates": [{"provider": "local", "model": "smollm2-135m", "compute": {"num_workers": 2}}],
    }
    r = client.post("/v1/experiments", headers=auth(token), json=bad)
    assert_error(r, 422, "invalid_request_error", "candidates.0.compute.num_workers", "compute_not_supported")
    assert len(dispatcher.sent) == sent  # nothing started
