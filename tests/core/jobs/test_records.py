"""Job records stored by the code before the typed record (tests/data/records) still load and run.

Each file holds a raw record as Tuneline stored it at one stage (a sandbox job and a local job)
and what ``public_job`` answered for it then.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import tasknames
from service.core.backends.base import RemoteEvent, RemoteJob
from service.core.backends.local import LocalState
from service.core.backends.remote import RemoteState
from service.core.clock import ManualClock
from service.core.jobs import record, states
from service.core.jobs.record import Job
from service.core.jobs.seeds import DEFAULT_SEED
from service.core.jobs.stages import finalize, poll
from service.core.jobs.views import public_job
from service.core.store import jobs as repo
from tests.conftest import SAMPLE_DATA
from tests.core.jobs.fakes import FakeProvider, FakeRemoteBackend, stage_context

RECORDS = SAMPLE_DATA / "records"
NAMES = sorted(p.stem for p in RECORDS.glob("*.json"))


def stored(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def insert(store, raw: dict[str, Any]) -> str:
    repo.insert(store, raw, raw["created_at"] * 1000)
    return str(raw["id"])


def test_every_stage_of_both_backends_is_covered():
    assert {n.split("_", 1)[1] for n in NAMES if n.startswith("sandbox_")} >= {
        "preparing",
        "submitting",
        "midpoll",
        "succeeded",
        "failed",
    }
    assert {n.split("_", 1)[1] for n in NAMES if n.startswith("local_")} >= {
        "preparing",
        "train_queued",
        "training",
        "succeeded",
        "failed",
    }


@pytest.mark.parametrize("name", NAMES)
def test_an_old_record_loads_and_its_public_json_is_unchanged(name):
    data = stored(name)
    raw, public = data["record"], data["public"]
    job = Job.from_dict(raw)
    assert (job.id, job.status, job.stage, job.provider) == (
        raw["id"],
        raw["status"],
        raw["stage"],
        raw["provider"],
    )
    expected_state = LocalState if raw["provider"] == "local" else RemoteState
    assert type(job.state) is expected_state
    assert job.extra == {}, f"keys of the old record nobody owns: {sorted(job.extra)}"
    view = public_job(job.to_dict())
    # Fields added since the dump are additive; an old record has their defaults.
    assert view.pop("priority") == 0 and job.priority == 0
    assert view == answered_now(public)
    assert job.seed == view["seed"]  # the seed later stages use is the one the job answers
    # Written back in the new shape, it reads the same again.
    again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job and public_job(again.to_dict()) == {**answered_now(public), "priority": 0}


def answered_now(public: dict[str, Any]) -> dict[str, Any]:
    """What an old record answers today: as then, but a record stored before Tuneline picked seeds
    (``seed: null``) answers the seed it was prepared and trained with (``jobs.seeds``)."""
    return {**public, "seed": DEFAULT_SEED if public["seed"] is None else public["seed"]}


def test_old_records_without_a_seed_are_covered():
    assert {stored(n)["public"]["seed"] is None for n in NAMES} == {True, False}


def test_the_state_of_old_records_lands_in_its_typed_part():
    midpoll = Job.from_dict(stored("sandbox_midpoll")["record"])
    raw = stored("sandbox_midpoll")["record"]
    assert isinstance(midpoll.state, RemoteState)
    assert midpoll.state.submit_started and midpoll.state.training_file == raw["provider_training_file"]
    assert midpoll.state.events_seen == raw["provider_events_seen"]
    done = stored("sandbox_succeeded")["record"]
    remote = Job.from_dict(done).state
    assert isinstance(remote, RemoteState) and remote.fine_tuned_model == done["provider_fine_tuned_model"]
    assert remote.result_files == done["provider_result_files"]
    local = stored("local_succeeded")["record"]
    state = Job.from_dict(local).state
    assert isinstance(state, LocalState) and state.model_dir == local["local_model_dir"]
    assert state.result_files == local["provider_result_files"] and state.child == local["local_child"]
    assert Job.from_dict(stored("local_failed")["record"]).error == stored("local_failed")["public"]["error"]


@pytest.mark.parametrize("name", ["sandbox_midpoll", "local_succeeded", "sandbox_failed"])
def test_the_api_answers_an_old_record_as_it_did(client, make_key, store, name):
    data = stored(name)
    job_id = insert(store, data["record"])
    token = make_key(data["record"]["tenant"])
    body = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}).json
    assert body == {**answered_now(data["public"]), "priority": 0}  # the field added since (additive)


def test_an_old_job_in_mid_poll_finishes_through_the_new_stages(settings, store):
    raw = stored("sandbox_midpoll")["record"]
    job_id = insert(store, raw)
    provider = FakeProvider()
    provider.jobs[raw["provider_job_id"]] = RemoteJob(
        id=raw["provider_job_id"],
        status="succeeded",
        fine_tuned_model="ft:gpt-4o-mini-2024-07-18:sandbox::x",
        trained_tokens=1234,
        result_files=["file-result"],
    )
    old, new = raw["provider_events_seen"][0], "ftevent-new"
    provider.events = [
        RemoteEvent(id=new, created_at=2, level="info", message="Fine-tuning job successfully completed"),
        RemoteEvent(id=old, created_at=1, level="info", message="seen before the upgrade"),
    ]
    ctx = stage_context(settings, store, {"sandbox": FakeRemoteBackend("sandbox", provider)}, ManualClock())
    before = len(repo.events_since(store, job_id, 0))
    assert poll.run_poll(ctx, job_id) == tasknames.JOB_FINALIZE
    assert finalize.run_finalize(ctx, job_id) is None
    job = record.load(store, job_id)
    assert job is not None and job.status == states.SUCCEEDED, job
    assert job.fine_tuned_model == f"ft:gpt-4o-mini-2024-07-18:{raw['tenant']}:funds:{job_id}"
    assert isinstance(job.state, RemoteState) and job.state.fine_tuned_model.endswith("::x")
    assert new in job.state.events_seen and set(raw["provider_events_seen"]) <= set(job.state.events_seen)
    messages = [e["message"] for e in repo.events_since(store, job_id, before)]
    assert "seen before the upgrade" not in messages and "Fine-tuning job successfully completed" in messages
    kept = repo.load(store, job_id)
    assert kept is not None and kept["backend_state"]["kind"] == "remote"
    assert not {"provider_events_seen", "submit_started", "provider_training_file"} & set(kept)
    assert job.trained_tokens == 1234 and len(job.result_files) == 1
    assert "create" not in provider.calls and "find" not in provider.calls  # never submitted again


def test_a_state_of_an_unknown_kind_is_kept_as_stored():
    raw = {**stored("local_succeeded")["record"], "backend_state": {"kind": "elsewhere", "slot": 3}}
    job = Job.from_dict(raw)
    assert job.to_dict()["backend_state"] == {"kind": "elsewhere", "slot": 3}
