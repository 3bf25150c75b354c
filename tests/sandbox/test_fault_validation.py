"""Fault options are validated once, by one schema, on every path they arrive on; nothing is clamped."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import marshmallow as ma
import pytest

from service.sandbox.faults import MAX_SLOW_MS, MAX_STEPS, Faults
from tests.api.test_files import assert_error, auth

MODEL = "gpt-4o-mini-2024-07-18"

# (options, the refused field's path inside the `sandbox` object, the error code)
BAD, MISSING, UNKNOWN = "invalid_value", "missing_required_parameter", "unknown_parameter"
REFUSED = [
    ({"steps": 0}, "steps", BAD),
    ({"steps": MAX_STEPS + 1}, "steps", BAD),
    ({"steps": "5"}, "steps", BAD),
    ({"steps": 2.5}, "steps", BAD),
    ({"steps": True}, "steps", BAD),
    ({"slow_ms": MAX_SLOW_MS + 1}, "slow_ms", BAD),
    ({"slow_ms": -1}, "slow_ms", BAD),
    ({"server_errors": -1}, "server_errors", BAD),
    ({"fail_at": "later"}, "fail_at", BAD),
    ({"rate_limit": {"count": -1}}, "rate_limit.count", BAD),
    ({"rate_limit": {"count": 1, "retry_after": 3601}}, "rate_limit.retry_after", BAD),
    ({"rate_limit": {"retry_after": 1}}, "rate_limit.count", MISSING),
    ({"create_fault": {"when": "never"}}, "create_fault.when", BAD),
    ({"create_fault": {"count": -1}}, "create_fault.count", BAD),
    ({"validating_s": -0.5}, "validating_s", BAD),
    ({"step_s": "1"}, "step_s", BAD),
    ({"error": {"code": "x", "detail": "y"}}, "error.detail", UNKNOWN),
    ({"bogus": 1}, "bogus", UNKNOWN),
]
IDS = [f"{field}={options}" for options, field, _ in REFUSED]
# The bounds themselves are accepted, as given.
ACCEPTED = {
    "steps": MAX_STEPS,
    "slow_ms": 0,
    "server_errors": 0,
    "rate_limit": {"count": 0, "retry_after": 0},
}


@pytest.fixture
def sandbox_auth(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return auth(settings.sandbox_api_key)


def via_jobs_api(client, make_key, sandbox_auth, options: dict[str, Any]) -> tuple[Any, str]:
    body = {"model": MODEL, "training_file": "file-x", "sandbox": options}
    return client.post("/v1/fine_tuning/jobs", headers=auth(make_key()), json=body), "sandbox"


def via_experiments_api(client, make_key, sandbox_auth, options: dict[str, Any]) -> tuple[Any, str]:
    body = {"training_file": "file-x", "candidates": [{"model": MODEL}, {"model": MODEL, "sandbox": options}]}
    return client.post("/v1/experiments", headers=auth(make_key()), json=body), "candidates.1.sandbox"


def via_sandbox_create(client, make_key, sandbox_auth, options: dict[str, Any]) -> tuple[Any, str]:
    upload = client.post(
        "/sandbox/v1/files",
        headers=sandbox_auth,
        content_type="multipart/form-data",
        data={
            "purpose": "fine-tune",
            "file": (io.BytesIO(b'{"prompt": "a", "completion": "b"}\n'), "t.jsonl"),
        },
    )
    body = {"model": MODEL, "training_file": upload.json["id"], "sandbox": options}
    return client.post("/sandbox/v1/fine_tuning/jobs", headers=sandbox_auth, json=body), "sandbox"


PATHS: dict[str, Callable[..., tuple[Any, str]]] = {
    "POST /v1/fine_tuning/jobs": via_jobs_api,
    "POST /v1/experiments": via_experiments_api,
    "POST /sandbox/v1/fine_tuning/jobs": via_sandbox_create,
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("options", "field", "code"), REFUSED, ids=IDS)
def test_out_of_range_options_are_refused_naming_the_field(
    client, make_key, sandbox_auth, path, options, field, code
) -> None:
    response, root = PATHS[path](client, make_key, sandbox_auth, options)
    assert_error(response, 400, "invalid_request_error", f"{root}.{field}", code)


@pytest.mark.parametrize(("options", "field", "code"), REFUSED, ids=IDS)
def test_the_simulator_takes_options_only_through_the_same_schema(options, field, code) -> None:
    with pytest.raises(ma.ValidationError) as err:
        Faults.load(options)
    path, messages = [], err.value.messages
    while isinstance(messages, dict):
        key = next(iter(messages))
        path.append(str(key))
        messages = messages[key]
    assert ".".join(path) == field


def test_options_at_their_bounds_are_kept_as_given(client, make_key, sandbox_auth) -> None:
    faults = Faults.load(ACCEPTED)
    assert (faults.steps, faults.slow_ms, faults.rate_limit_count, faults.retry_after) == (MAX_STEPS, 0, 0, 0)
    assert Faults.load({"slow_ms": MAX_SLOW_MS}).slow_ms == MAX_SLOW_MS
    response, _ = via_sandbox_create(client, make_key, sandbox_auth, ACCEPTED)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("value", ["create-nonsense", "CREATE-500", ""])
def test_unknown_create_header_fault_is_refused(client, make_key, sandbox_auth, value) -> None:
    response, _ = via_sandbox_create(client, make_key, sandbox_auth, {})
    assert response.status_code == 200
    body = {"model": MODEL, "training_file": response.json["training_file"]}
    refused = client.post(
        "/sandbox/v1/fine_tuning/jobs", headers={**sandbox_auth, "X-Sandbox-Fault": value}, json=body
    )
    assert_error(refused, 400, "invalid_request_error", "X-Sandbox-Fault", "invalid_value")
    stats = client.get("/sandbox/v1/_stats", headers=sandbox_auth).json
    assert stats["creates"] == 1  # only the first, unfaulted create


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"upload_slow_ms": MAX_SLOW_MS + 1}, BAD),
        ({"upload_slow_ms": -5}, BAD),
        ({"upload_slow_ms": "5"}, BAD),
        ({"upload_slow_ms": 1.5}, BAD),
        ({"upload_slow_ms": 1, "slow_ms": 1}, UNKNOWN),
    ],
)
def test_account_faults_are_refused_out_of_range(client, sandbox_auth, body, code) -> None:
    refused = client.put("/sandbox/v1/_faults", headers=sandbox_auth, json=body)
    param = "slow_ms" if code == UNKNOWN else "upload_slow_ms"
    assert_error(refused, 400, "invalid_request_error", param, code)
    assert client.get("/sandbox/v1/_faults", headers=sandbox_auth).json["upload_slow_ms"] == 0


def test_account_faults_at_the_bound_are_kept_as_given(client, sandbox_auth) -> None:
    put = client.put("/sandbox/v1/_faults", headers=sandbox_auth, json={"upload_slow_ms": MAX_SLOW_MS})
    assert put.status_code == 200 and put.json["upload_slow_ms"] == MAX_SLOW_MS
    client.put("/sandbox/v1/_faults", headers=sandbox_auth, json={"upload_slow_ms": 0})
