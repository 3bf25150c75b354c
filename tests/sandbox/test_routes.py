"""The sandbox routes over the Flask test client, and the official openai SDK over real HTTP."""

from __future__ import annotations

import base64
import io
import time

import openai
import pytest
from openai import OpenAI

from service.sandbox.timeline import RESULT_COLUMNS
from tests.support.procs import wait_until

TRAIN = (
    '{"messages": [{"role": "user", "content": "什么是基金？"}, '
    '{"role": "assistant", "content": "集合投资。"}]}\n'
)


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.with_overrides(sandbox_time_scale=0.02)


@pytest.fixture
def hdr(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {settings.sandbox_api_key}"}


def upload(client, hdr, data: bytes = TRAIN.encode(), purpose: str = "fine-tune") -> dict:
    r = client.post(
        "/sandbox/v1/files",
        headers=hdr,
        content_type="multipart/form-data",
        data={"purpose": purpose, "file": (io.BytesIO(data), "train.jsonl")},
    )
    assert r.status_code == 200, r.json
    return r.json


def create(client, hdr, headers=None, **body) -> object:
    training = upload(client, hdr)["id"]
    return client.post(
        "/sandbox/v1/fine_tuning/jobs",
        headers={**hdr, **(headers or {})},
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": training, **body},
    )


def assert_error(r, status, type_, param=None, code=None):
    assert r.status_code == status, r.data
    err = r.json["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == type_
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code


def test_sandbox_key_is_required_and_tuneline_keys_are_not_it(client, make_key):
    assert_error(
        client.get("/sandbox/v1/fine_tuning/jobs"), 401, "authentication_error", code="invalid_api_key"
    )
    assert_error(
        client.get("/sandbox/v1/files", headers={"Authorization": f"Bearer {make_key()}"}),
        401,
        "authentication_error",
    )
    assert_error(
        client.get("/sandbox/v1/_stats", headers={"Authorization": "Basic x"}), 401, "authentication_error"
    )


def test_files_roundtrip(client, hdr, settings):
    f = upload(client, hdr)
    assert f["id"].startswith("file-") and f["status"] == "processed" and f["bytes"] == len(TRAIN.encode())
    assert (settings.data_dir / "sandbox" / f["id"]).read_bytes() == TRAIN.encode()
    assert client.get(f"/sandbox/v1/files/{f['id']}", headers=hdr).json == f
    assert client.get(f"/sandbox/v1/files/{f['id']}/content", headers=hdr).data == TRAIN.encode()
    listed = client.get("/sandbox/v1/files?purpose=fine-tune", headers=hdr).json["data"]
    assert [x["id"] for x in listed] == [f["id"]]
    assert client.get("/sandbox/v1/files?purpose=batch", headers=hdr).json["data"] == []
    assert_error(client.get("/sandbox/v1/files/file-nope", headers=hdr), 404, "not_found_error")
    assert_error(
        client.post(
            "/sandbox/v1/files",
            headers=hdr,
            content_type="multipart/form-data",
            data={"purpose": "nonsense", "file": (io.BytesIO(b"x"), "a")},
        ),
        400,
        "invalid_request_error",
        "purpose",
    )


def test_job_runs_to_success_with_events_checkpoints_and_result(client, hdr):
    r = create(
        client,
        hdr,
        suffix="funds",
        metadata={"tuneline_job_id": "ftjob-abc"},
        hyperparameters={"n_epochs": 2},
        seed=7,
    )
    assert r.status_code == 200, r.json
    job = r.json
    assert job["object"] == "fine_tuning.job" and job["organization_id"] == "sandbox"
    assert job["status"] == "validating_files" and job["seed"] == 7
    assert job["hyperparameters"]["n_epochs"] == 2
    done = wait_until(
        lambda: (
            (j := client.get(f"/sandbox/v1/fine_tuning/jobs/{job['id']}", headers=hdr).json)["status"]
            == "succeeded"
            and j
        ),
        10,
        what="sandbox job to succeed",
    )
    assert done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:sandbox:funds:")
    assert done["trained_tokens"] > 0 and len(done["result_files"]) == 1
    events = client.get(f"/sandbox/v1/fine_tuning/jobs/{job['id']}/events?limit=100", headers=hdr).json
    assert events["data"][0]["message"] == "[sandbox] The job has successfully completed"
    assert sum(e["type"] == "metrics" for e in events["data"]) == 10
    ckpts = client.get(f"/sandbox/v1/fine_tuning/jobs/{job['id']}/checkpoints", headers=hdr).json
    assert [c["step_number"] for c in ckpts["data"]] == [10, 7, 3]
    csv = client.get(f"/sandbox/v1/files/{done['result_files'][0]}/content", headers=hdr).data.decode()
    assert csv.splitlines()[0] == ",".join(RESULT_COLUMNS)
    chat = client.post(
        "/sandbox/v1/chat/completions",
        headers=hdr,
        json={"model": done["fine_tuned_model"], "messages": [{"role": "user", "content": "基金？"}]},
    )
    assert chat.status_code == 200 and "基金？" in chat.json["choices"][0]["message"]["content"]
    missing = client.post("/sandbox/v1/completions", headers=hdr, json={"model": "ft:nope", "prompt": "x"})
    assert_error(missing, 404, "not_found_error", "model", "model_not_found")


def test_list_with_metadata_filter(client, hdr):
    a = create(client, hdr, metadata={"tuneline_job_id": "ftjob-a"}).json
    create(client, hdr, metadata={"tuneline_job_id": "ftjob-b"})
    found = client.get("/sandbox/v1/fine_tuning/jobs?metadata[tuneline_job_id]=ftjob-a", headers=hdr).json
    assert [j["id"] for j in found["data"]] == [a["id"]] and found["has_more"] is False
    assert len(client.get("/sandbox/v1/fine_tuning/jobs?limit=1", headers=hdr).json["data"]) == 1


def test_list_pages_newest_first_with_status_like_openai(client, hdr):
    made = [create(client, hdr).json["id"] for _ in range(3)]
    first = client.get("/sandbox/v1/fine_tuning/jobs?limit=2", headers=hdr).json
    assert first["object"] == "list" and first["has_more"] is True
    assert [j["status"] for j in first["data"]] == ["validating_files"] * 2
    rest = client.get(
        f"/sandbox/v1/fine_tuning/jobs?limit=2&after={first['data'][-1]['id']}", headers=hdr
    ).json
    assert rest["has_more"] is False
    assert [j["id"] for j in first["data"] + rest["data"]] == made[::-1]
    assert client.get("/sandbox/v1/_stats", headers=hdr).json["calls"] == {"jobs.list": 2}


def test_bad_creates_are_openai_400s(client, hdr):
    assert_error(create(client, hdr, model="gpt-9"), 400, "invalid_request_error", "model", "model_not_found")
    assert_error(
        create(client, hdr, training_file="file-nope"), 400, "invalid_request_error", "training_file"
    )
    assert_error(
        create(client, hdr, sandbox={"fail_at": "later"}), 400, "invalid_request_error", "sandbox.fail_at"
    )
    assert_error(create(client, hdr, bogus=1), 400, "invalid_request_error", "bogus", "unknown_parameter")


def test_injected_429_500_and_failure(client, hdr):
    job = create(
        client,
        hdr,
        sandbox={"rate_limit": {"count": 2, "retry_after": 0.5}, "server_errors": 1, "fail_at": "running"},
    ).json
    url = f"/sandbox/v1/fine_tuning/jobs/{job['id']}"
    for _ in range(2):
        r = client.get(url, headers=hdr)
        assert_error(r, 429, "rate_limit_error")
        assert r.headers["Retry-After"] == "0.5"
    assert_error(client.get(url, headers=hdr), 500, "server_error")
    failed = wait_until(
        lambda: (j := client.get(url, headers=hdr).json)["status"] == "failed" and j,
        10,
        what="injected failure",
    )
    assert failed["error"]["message"].startswith("[sandbox]")


def test_slow_reads(client, hdr):
    job = create(client, hdr, sandbox={"slow_ms": 300}).json
    started = time.monotonic()
    assert client.get(f"/sandbox/v1/fine_tuning/jobs/{job['id']}", headers=hdr).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_ambiguous_create_header_and_stats(client, hdr):
    meta = {"tuneline_job_id": "ftjob-amb"}
    assert_error(
        create(client, hdr, headers={"X-Sandbox-Fault": "create-500"}, metadata=meta), 500, "server_error"
    )
    assert client.get("/sandbox/v1/_stats", headers=hdr).json == {
        "creates": 0,
        "creates_by_tuneline_job": {},
        "job_reads": [],
        "calls": {},
        "slow_in_flight": {},
    }
    ambiguous = create(client, hdr, headers={"X-Sandbox-Fault": "create-timeout-after-create"}, metadata=meta)
    assert_error(ambiguous, 500, "server_error")
    found = client.get("/sandbox/v1/fine_tuning/jobs?metadata[tuneline_job_id]=ftjob-amb", headers=hdr).json
    assert len(found["data"]) == 1
    assert client.get("/sandbox/v1/_stats", headers=hdr).json == {
        "creates": 1,
        "creates_by_tuneline_job": {"ftjob-amb": 1},
        "job_reads": [],
        "calls": {},
        "slow_in_flight": {},
    }


def test_account_faults_route(client, hdr):
    assert client.get("/sandbox/v1/_faults", headers=hdr).json == {
        "object": "sandbox.faults",
        "upload_slow_ms": 0,
    }
    r = client.put("/sandbox/v1/_faults", headers=hdr, json={"upload_slow_ms": 200})
    assert r.status_code == 200 and r.json["upload_slow_ms"] == 200
    assert_error(
        client.put("/sandbox/v1/_faults", headers=hdr, json={"upload_slow_ms": -5}),
        400,
        "invalid_request_error",
    )
    assert_error(
        client.put("/sandbox/v1/_faults", headers=hdr, json={"nope": 1}), 400, "invalid_request_error"
    )
    started = time.monotonic()
    create(client, hdr)  # uploads a training file first
    assert time.monotonic() - started >= 0.2
    client.put("/sandbox/v1/_faults", headers=hdr, json={"upload_slow_ms": 0})


def test_cancel(client, hdr):
    job = create(client, hdr, sandbox={"steps": 1000}).json
    r = client.post(f"/sandbox/v1/fine_tuning/jobs/{job['id']}/cancel", headers=hdr)
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert client.get(f"/sandbox/v1/fine_tuning/jobs/{job['id']}", headers=hdr).json["status"] == "cancelled"
    assert_error(
        client.post("/sandbox/v1/fine_tuning/jobs/ftjob-nope/cancel", headers=hdr), 404, "not_found_error"
    )


@pytest.fixture
def live_url(live_base_url: str) -> str:
    return f"{live_base_url}/sandbox/v1"


def test_official_openai_sdk_against_the_sandbox(live_url, settings):
    client = OpenAI(base_url=live_url, api_key=settings.sandbox_api_key, max_retries=0, timeout=20)
    created = client.files.create(file=("train.jsonl", TRAIN.encode()), purpose="fine-tune")
    assert created.status == "processed"
    job = client.fine_tuning.jobs.create(
        model="gpt-4.1-mini-2025-04-14",
        training_file=created.id,
        validation_file=created.id,
        suffix="sdk",
        metadata={"tuneline_job_id": "ftjob-sdk"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"sandbox": {"result_base64": True}},
    )
    assert job.organization_id == "sandbox" and job.method and job.method.type == "supervised"
    listed = client.fine_tuning.jobs.list(metadata={"tuneline_job_id": "ftjob-sdk"})
    assert [j.id for j in listed.data] == [job.id]
    done = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j,
        10,
        what="sdk job",
    )
    assert done.fine_tuned_model and done.fine_tuned_model.endswith(job.id.removeprefix("ftjob-"))
    events = client.fine_tuning.jobs.list_events(job.id, limit=50)
    metrics = [e for e in events.data if e.type == "metrics"]
    assert len(metrics) == 10 and "valid_loss" in metrics[0].data
    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert ckpts.data[0].step_number == 10 and ckpts.data[0].metrics.full_valid_loss is not None
    raw = client.files.content(done.result_files[0]).content
    assert base64.b64decode(raw).decode().startswith("step,train_loss")
    chat = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content and chat.choices[0].message.content.startswith("[sandbox]")
    assert client.completions.create(model=done.fine_tuned_model, prompt="hi").choices[0].text

    other = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=created.id, extra_body={"sandbox": {"steps": 1000}}
    )
    assert client.fine_tuning.jobs.cancel(other.id).status == "cancelled"

    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="gpt-9", training_file=created.id)
    assert bad.value.code == "model_not_found"
    faults = {"rate_limit": {"count": 1, "retry_after": 2}, "server_errors": 1}
    flaky = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=created.id, extra_body={"sandbox": faults}
    )
    with pytest.raises(openai.RateLimitError) as limited:
        client.fine_tuning.jobs.retrieve(flaky.id)
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.InternalServerError):
        client.fine_tuning.jobs.retrieve(flaky.id)
    assert client.fine_tuning.jobs.retrieve(flaky.id).id == flaky.id
    with pytest.raises(openai.InternalServerError):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=created.id,
            metadata={"tuneline_job_id": "ftjob-amb"},
            extra_headers={"X-Sandbox-Fault": "create-timeout-after-create"},
        )
    assert len(client.fine_tuning.jobs.list(metadata={"tuneline_job_id": "ftjob-amb"}).data) == 1
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=live_url, api_key="wrong", max_retries=0).fine_tuning.jobs.list()


REINFORCEMENT = {
    "type": "reinforcement",
    "reinforcement": {
        "grader": {
            "type": "string_check",
            "name": "mentions gold",
            "input": "{{sample.output_text}}",
            "reference": "{{item.keyword}}",
            "operation": "like",
        },
        "hyperparameters": {"n_epochs": 1, "compute_multiplier": 2, "eval_samples": "auto"},
    },
}


def test_reinforcement_through_the_sdk_and_tunelines_provider_client(live_url, settings):
    """The official SDK's reinforcement request is simulated with its grader as sent; Tuneline's
    provider client (service.core.backends.remote) forwards a job's method unchanged."""
    from service.core.backends.remote import CreateJobRequest, SDKClient

    client = OpenAI(base_url=live_url, api_key=settings.sandbox_api_key, max_retries=0, timeout=20)
    rows = '{"messages": [{"role": "user", "content": "黄金能买吗？"}], "keyword": "黄金"}\n'
    training = client.files.create(file=("rl.jsonl", rows.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=training.id, method=REINFORCEMENT
    )
    assert job.method is not None and job.method.type == "reinforcement" and job.method.reinforcement
    assert (
        job.method.reinforcement.grader.model_dump(exclude_none=True)
        == REINFORCEMENT["reinforcement"]["grader"]
    )
    hyper = job.method.reinforcement.hyperparameters
    assert hyper is not None and (hyper.n_epochs, hyper.compute_multiplier, hyper.eval_samples) == (1, 2, 1)
    done = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j, 10, what="rl job"
    )
    assert done.fine_tuned_model

    forwarded = SDKClient(client).create_job(
        CreateJobRequest(
            model="gpt-4o-mini-2024-07-18",
            training_file=training.id,
            validation_file=None,
            hyperparameters={},
            suffix=None,
            seed=None,
            metadata={"tuneline_job_id": "ftjob-rl"},
            method=REINFORCEMENT,
        )
    )
    raw = client.fine_tuning.jobs.retrieve(forwarded.id).method
    assert raw is not None and raw.reinforcement is not None
    assert raw.reinforcement.grader.model_dump(exclude_none=True) == REINFORCEMENT["reinforcement"]["grader"]

    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=training.id,
            method={"type": "reinforcement", "reinforcement": {}},  # type: ignore[typeddict-item]
        )
    assert bad.value.code == "missing_required_parameter"
