"""Ops view, stats, the Prometheus exposition and the loss-curve image, over the Flask test client."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from service.app import create_app
from service.core.jobs import lifecycle, states
from service.core.preparation import prepare_uploaded_file
from service.core.store import jobs as repo
from service.taskqueue import QUEUES, CeleryDispatcher, make_celery
from tests.api.test_files import assert_error, auth, upload

TRAIN = "".join(
    f'{{"messages": [{{"role": "user", "content": "问题{i}：什么是基金？"}}, '
    f'{{"role": "assistant", "content": "答案{i}：集合投资。"}}]}}\n'
    for i in range(12)
).encode()


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    """A real Celery dispatcher: enqueued tasks land in the broker (no worker), so depths are real."""
    application = create_app(
        settings.with_overrides(metrics_enabled=True), dispatcher=CeleryDispatcher(make_celery(settings))
    )
    application.testing = True
    return application


def new_job(client, store, settings, token: str) -> dict:
    """Upload, prepare in-process (what the datasets worker runs), then create a sandbox job."""
    f = upload(client, token, TRAIN).json
    prepare_uploaded_file(store, settings.data_dir, f["id"])
    r = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth(token),
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": f["id"], "provider": "sandbox"},
    )
    assert r.status_code == 200, r.json
    return r.json


def test_ops_key_lists_and_reads_every_tenant_members_stay_isolated(client, store, settings, make_key):
    alice, bob, ops = make_key("alice"), make_key("bob"), make_key("ops-team", role="ops")
    a = new_job(client, store, settings, alice)
    b = new_job(client, store, settings, bob)
    assert a["tenant"] == "alice" and b["tenant"] == "bob"

    everyone = client.get("/v1/fine_tuning/jobs", headers=auth(ops)).json["data"]
    assert [(j["id"], j["tenant"]) for j in everyone] == [(b["id"], "bob"), (a["id"], "alice")]
    only_alice = client.get("/v1/fine_tuning/jobs?tenant=alice", headers=auth(ops)).json["data"]
    assert [j["id"] for j in only_alice] == [a["id"]]
    assert client.get(f"/v1/fine_tuning/jobs/{b['id']}", headers=auth(ops)).json["tenant"] == "bob"

    mine = client.get("/v1/fine_tuning/jobs?tenant=alice", headers=auth(alice)).json["data"]
    assert [j["id"] for j in mine] == [a["id"]]
    assert [j["id"] for j in client.get("/v1/fine_tuning/jobs", headers=auth(alice)).json["data"]] == [
        a["id"]
    ]
    assert_error(
        client.get("/v1/fine_tuning/jobs?tenant=bob", headers=auth(alice)),
        403,
        "permission_error",
        "tenant",
        "tenant_not_allowed",
    )
    assert_error(client.get(f"/v1/fine_tuning/jobs/{b['id']}", headers=auth(alice)), 404, "not_found_error")
    assert_error(
        client.get(f"/v1/fine_tuning/jobs/{b['id']}/events", headers=auth(alice)), 404, "not_found_error"
    )


def test_stats_count_by_status_stage_provider_with_oldest_and_failures(client, store, settings, make_key):
    alice, bob, ops = make_key("alice"), make_key("bob"), make_key("ops-team", role="ops")
    a1 = new_job(client, store, settings, alice)
    a2 = new_job(client, store, settings, alice)
    b1 = new_job(client, store, settings, bob)
    lifecycle.transition(store, a2["id"], states.VALIDATING, "uploading", "prepared")
    lifecycle.transition(
        store,
        b1["id"],
        states.FAILED,
        "done",
        "failed",
        apply=lambda j: setattr(
            j, "error", {"code": "invalid_training_file", "message": "line 1", "param": "training_file"}
        ),
    )

    mine = client.get("/v1/stats", headers=auth(alice)).json
    assert mine["object"] == "stats" and mine["tenant"] == "alice" and mine["queues"] == {}
    assert mine["jobs"]["total"] == 2
    assert mine["jobs"]["by_status"]["validating_files"] == 2 and mine["jobs"]["by_status"]["failed"] == 0
    assert mine["jobs"]["by_stage"]["preparing"] == 1 and mine["jobs"]["by_stage"]["uploading"] == 1
    assert mine["jobs"]["by_provider"]["sandbox"] == 2
    assert mine["oldest_active"]["preparing"]["id"] == a1["id"]
    assert mine["oldest_active"]["uploading"]["id"] == a2["id"]
    assert mine["oldest_active"]["uploading"]["created_at"] == a2["created_at"]
    assert mine["oldest_active"]["preparing"]["age_s"] >= 0
    assert mine["recent_failures"] == []

    everyone = client.get("/v1/stats", headers=auth(ops)).json
    assert everyone["tenant"] is None and everyone["jobs"]["total"] == 3
    assert everyone["jobs"]["by_status"] == {
        "validating_files": 2,
        "queued": 0,
        "running": 0,
        "paused": 0,
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert everyone["jobs"]["by_stage"]["done"] == 1
    assert [f["id"] for f in everyone["recent_failures"]] == [b1["id"]]
    assert everyone["recent_failures"][0]["error"]["code"] == "invalid_training_file"
    # Three uploads and three jobs each enqueued one task on the datasets queue; no worker runs.
    assert set(everyone["queues"]) == set(QUEUES) and everyone["queues"]["datasets"] == 6
    bob_only = client.get("/v1/stats?tenant=bob", headers=auth(ops)).json
    assert bob_only["jobs"]["total"] == 1 and bob_only["oldest_active"] == {}
    assert_error(client.get("/v1/stats?tenant=bob", headers=auth(alice)), 403, "permission_error", "tenant")


def test_stats_counters_agree_with_the_records_after_many_moves(client, store, settings, make_key):
    """The write-time counters match a full count of the stored records."""
    token = make_key("carol")
    made = [new_job(client, store, settings, token)["id"] for _ in range(6)]
    lifecycle.transition(store, made[0], states.CANCELLED, "done", "cancelled")
    lifecycle.try_transition(store, made[0], states.FAILED, "done", "too late")  # refused: no count
    for job_id in made[1:4]:
        lifecycle.transition(store, job_id, states.VALIDATING, "provider_validating", "submitted")
        lifecycle.transition(store, job_id, states.RUNNING, "training", "running")
        lifecycle.transition(store, job_id, states.RUNNING, "training", "repeat is a no-op")
    lifecycle.transition(store, made[3], states.SUCCEEDED, "done", "done")
    records = [repo.load(store, job_id) for job_id in made]
    got = client.get("/v1/stats", headers=auth(token)).json["jobs"]
    for status in states.STATUSES:
        assert got["by_status"][status] == sum(r["status"] == status for r in records), status
    for stage in states.STAGES:
        assert got["by_stage"][stage] == sum(r["stage"] == stage for r in records), stage


def test_metrics_endpoint_auth_and_gauges(client, store, settings, make_key):
    member, ops = make_key("alice"), make_key("ops-team", role="ops")
    new_job(client, store, settings, member)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    text = r.get_data(as_text=True)
    assert 'tuneline_jobs_by_status{status="validating_files"} 1.0' in text
    assert 'tuneline_jobs_by_stage{stage="preparing"} 1.0' in text
    assert 'tuneline_jobs_by_provider{provider="sandbox"} 1.0' in text
    assert 'tuneline_queue_depth{queue="datasets"} 2.0' in text
    assert 'tuneline_oldest_active_job_age_seconds{stage="preparing"}' in text
    assert 'tuneline_http_requests_total{method="POST",route="/v1/fine_tuning/jobs",status="200"} 1.0' in text
    assert client.get("/metrics", headers=auth(ops)).status_code == 200
    assert_error(
        client.get("/metrics", headers=auth(member)), 403, "permission_error", code="ops_key_required"
    )
    assert_error(client.get("/metrics", headers=auth("tl-nope-nope")), 401, "authentication_error")


def test_metrics_endpoint_is_404_when_disabled(settings, make_key):
    app = create_app(settings.with_overrides(metrics_enabled=False), dispatcher=None)
    client = app.test_client()
    assert_error(client.get("/metrics"), 404, "not_found_error", code="metrics_disabled")
    ops = make_key("ops-team", role="ops")
    assert_error(client.get("/metrics", headers=auth(ops)), 404, "not_found_error")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk (raises when it is not a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND"
    return width, height


def test_loss_curve_png(client, store, settings, make_key):
    alice, bob = make_key("alice"), make_key("bob")
    job = new_job(client, store, settings, alice)
    repo.put_metrics(
        store,
        job["id"],
        [
            {
                "step": s,
                "train_loss": 2.0 / s,
                "train_mean_token_accuracy": 0.5 + s / 40,
                "valid_loss": 2.2 / s if s % 2 == 0 else None,
                "valid_mean_token_accuracy": 0.45 + s / 40 if s % 2 == 0 else None,
            }
            for s in range(1, 11)
        ],
    )
    r = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics?format=png", headers=auth(alice))
    assert r.status_code == 200 and r.content_type == "image/png"
    assert png_size(r.data) == (800, 600)
    assert len(r.data) > 10_000  # axes, two curves per panel, legends: far more than a blank image
    assert_error(
        client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics?format=png", headers=auth(bob)),
        404,
        "not_found_error",
    )
    assert_error(
        client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics?format=gif", headers=auth(alice)),
        400,
        "invalid_request_error",
        "format",
    )


def test_building_the_app_does_not_import_matplotlib(settings):
    """The PNG route imports matplotlib on first use; the API starts without it."""
    code = (
        "import sys; from service.app import create_app; from service.settings import Settings; "
        "create_app(Settings(env='test')); sys.exit('matplotlib' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
