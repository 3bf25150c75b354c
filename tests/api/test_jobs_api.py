"""Jobs API request parsing over the Flask test client."""

from __future__ import annotations

from tests.api.test_files import assert_error, auth


def test_metadata_filters_reject_nested_keys(client, make_key):
    token = make_key()
    ok = client.get("/v1/fine_tuning/jobs?metadata[team]=a", headers=auth(token))
    assert ok.status_code == 200
    assert_error(
        client.get("/v1/fine_tuning/jobs?metadata[team][x]=a", headers=auth(token)),
        400,
        "invalid_request_error",
        "metadata",
    )


def failed_with(code: str, message: str):
    def apply(job) -> None:
        job.error = {"code": code, "message": message, "param": "training_file"}

    return apply


def test_job_get_body_is_what_the_schema_would_dump(client, make_key, store):
    """GET /v1/fine_tuning/jobs/{id} sends public_job as is (no schema dump, for speed): in every
    state, dumping the body through JobSchema must not change it, and another tenant gets 404."""
    from service.api.jobs.schemas import JobSchema
    from service.core.jobs import lifecycle, states
    from service.core.store import jobs as repo
    from tests.bench.job_get import job_record

    token = make_key("acme")
    job = job_record("acme")
    repo.insert(store, job, job["created_at"] * 1000)
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    steps = [
        (states.VALIDATING, "provider_validating", {"provider_job_id": "ftjob-p1", "provider_status": "x"}),
        (states.RUNNING, "training", {"estimated_finish": 1_900_000_000}),
        (
            states.SUCCEEDED,
            "done",
            {"fine_tuned_model": "ft:m:acme::x", "result_files": ["file-r"], "trained_tokens": 1234},
        ),
    ]
    bodies = [client.get(url, headers=auth(token)).json]
    for status, stage, updates in steps:
        lifecycle.transition(
            store, job["id"], status, stage, "step", apply=lambda j, u=updates: j.__dict__.update(u)
        )
        bodies.append(client.get(url, headers=auth(token)).json)
    failed = job_record("acme")
    repo.insert(store, failed, failed["created_at"] * 1000)
    lifecycle.transition(
        store,
        failed["id"],
        states.FAILED,
        "done",
        "failed",
        apply=failed_with("invalid_training_file", "bad"),
    )
    bodies.append(client.get(f"/v1/fine_tuning/jobs/{failed['id']}", headers=auth(token)).json)
    for body in bodies:
        assert JobSchema().dump(body) == body
    assert [b["status"] for b in bodies] == [
        "validating_files",
        "validating_files",
        "running",
        "succeeded",
        "failed",
    ]
    assert (
        bodies[-2]["fine_tuned_model"] == "ft:m:acme::x"
        and bodies[-1]["error"]["code"] == "invalid_training_file"
    )
    assert_error(client.get(url, headers=auth(make_key("other"))), 404, "not_found_error")


def test_job_get_goes_through_the_one_auth_hook(client, make_key, store):
    """GET job refuses exactly what every data route refuses (no route skips the hook)."""
    from service.api import auth as api_auth
    from service.core import auth as core_auth
    from service.core.store import jobs as repo
    from tests.bench.job_get import job_record

    assert not hasattr(api_auth, "SELF_AUTHENTICATING")
    record, token = core_auth.create_key(store, "acme")
    job = job_record("acme")
    repo.insert(store, job, job["created_at"] * 1000)
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    assert client.get(url, headers=auth(token)).status_code == 200
    assert_error(client.get(url), 401, "authentication_error", code="missing_api_key")
    assert_error(client.get(url, headers={"Authorization": "Basic abc"}), 401, "authentication_error")
    assert_error(client.get(url, headers=auth(token[:-3] + "xyz")), 401, "authentication_error")
    assert_error(client.get(url, headers=auth("tl-nokey-secret")), 401, "authentication_error")
    # An unknown job with a bad key is a 401 too (nothing about the job leaks before auth).
    assert_error(
        client.get("/v1/fine_tuning/jobs/ftjob-none", headers=auth("tl-x-y")), 401, "authentication_error"
    )
    core_auth.revoke_key(store, record.id)
    assert_error(client.get(url, headers=auth(token)), 401, "authentication_error")


def test_job_get_reads_an_unchanged_job_from_memory_and_a_change_at_once(
    client, app, make_key, store, settings
):
    """The API keeps a job record it read while Redis reports no change (TUNELINE_READ_CACHE_S);
    a write from anywhere (here another client, as a worker's) shows in the very next GET."""
    from service.core.jobs import lifecycle, states
    from service.core.store import Store
    from service.core.store import jobs as repo
    from tests.bench.job_get import job_record

    tracked = app.extensions["tuneline"].store.tracked
    token = make_key("acme")
    job = job_record("acme")
    repo.insert(store, job, job["created_at"] * 1000)
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    assert client.get(url, headers=auth(token)).json["status"] == "validating_files"
    before = dict(tracked.stats)
    for _ in range(5):
        assert client.get(url, headers=auth(token)).json["status"] == "validating_files"
    assert (tracked.stats["hits"], tracked.stats["misses"]) == (before["hits"] + 5, before["misses"])
    worker = Store.from_url(settings.redis_url)  # another process's connection
    lifecycle.transition(worker, job["id"], states.RUNNING, "training", "step")
    assert client.get(url, headers=auth(token)).json["status"] == "running"
    assert tracked.stats["misses"] == before["misses"] + 1
