"""OpenAI's fine-tuning objects (as the SDK dumps them) mapped to Tuneline's read-only records."""

from __future__ import annotations

from typing import Any

from service.core.imports import mapping
from service.core.jobs.record import Job
from service.core.jobs.views import public_job

# A succeeded DPO job and a failed supervised one, in the shapes of OpenAI's API reference.
SUCCEEDED: dict[str, Any] = {
    "id": "ftjob-abc123",
    "object": "fine_tuning.job",
    "created_at": 1721764800,
    "finished_at": 1721768400,
    "model": "gpt-4o-mini-2024-07-18",
    "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:acme:support-v2:9qWxYz1",
    "organization_id": "org-123",
    "result_files": ["file-res1"],
    "status": "succeeded",
    "validation_file": "file-val1",
    "training_file": "file-train1",
    "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
    "method": {
        "type": "dpo",
        "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 3}},
        "supervised": None,
        "reinforcement": None,
    },
    "trained_tokens": 5768,
    "integrations": [],
    "seed": 42,
    "estimated_finish": None,
    "metadata": {"team": "support"},
    "error": {"code": None, "message": None, "param": None},
}
FAILED: dict[str, Any] = {
    "id": "ftjob-def456",
    "created_at": 1721764900,
    "finished_at": 1721765000,
    "model": "gpt-4.1-mini-2025-04-14",
    "fine_tuned_model": None,
    "status": "failed",
    "training_file": "file-train2",
    "validation_file": None,
    "hyperparameters": None,
    "method": {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}},
    },
    "trained_tokens": None,
    "seed": 7,
    "metadata": None,
    "error": {
        "code": "invalid_training_file",
        "message": "line 3: missing messages",
        "param": "training_file",
    },
}


def _job(raw: dict[str, Any], **kw: Any) -> Job:
    args: dict[str, Any] = {
        "tenant": "acme",
        "source": "openai",
        "account": "openai:https://api.openai.com/v1",
        "import_id": "imp-1",
        "training_file": "file-t",
        "validation_file": None,
        "now": 1800000000,
    }
    return mapping.to_job(raw, **{**args, **kw})


def test_a_succeeded_job_keeps_what_openai_reported():
    job = _job(SUCCEEDED, validation_file="file-v")
    assert (job.status, job.stage, job.provider, job.provider_status) == (
        "succeeded",
        "done",
        "openai",
        "succeeded",
    )
    assert job.provider_job_id == "ftjob-abc123"
    assert job.fine_tuned_model == "ft:gpt-4o-mini-2024-07-18:acme:support-v2:9qWxYz1"
    assert job.suffix == "support-v2"
    assert job.model == "gpt-4o-mini-2024-07-18"
    assert (job.training_file, job.validation_file) == ("file-t", "file-v")
    assert (job.created_at, job.finished_at, job.trained_tokens, job.seed) == (
        1721764800,
        1721768400,
        5768,
        42,
    )
    assert job.hyperparameters == {
        "n_epochs": 3,
        "batch_size": 1,
        "learning_rate_multiplier": 1.8,
        "beta": 0.1,
    }
    assert job.method == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 3}}}
    assert job.metadata == {"team": "support"}
    assert job.error is None  # OpenAI sends an all-null error object on success
    assert job.import_id == "imp-1"
    assert job.result_files == []  # the provider's result file ids mean nothing in Tuneline


def test_a_failed_job_keeps_its_error_and_the_method_hyperparameters():
    job = _job(FAILED)
    assert job.status == "failed" and job.stage == "done"
    assert job.error == {
        "code": "invalid_training_file",
        "message": "line 3: missing messages",
        "param": "training_file",
    }
    assert job.hyperparameters == {"n_epochs": 2, "batch_size": "auto"}
    assert job.suffix is None and job.fine_tuned_model is None


def test_the_record_round_trips_and_shows_import_id_publicly():
    job = _job(SUCCEEDED)
    again = Job.from_dict(job.to_dict())
    assert again == job
    public = public_job(job.to_dict())
    assert public["import_id"] == "imp-1" and public["provider_job_id"] == "ftjob-abc123"
    assert public["organization_id"] == "acme"


def test_the_job_id_is_derived_per_tenant_and_account():
    first = mapping.job_id_for("acme", "openai:u", "ftjob-abc123")
    assert first == mapping.job_id_for("acme", "openai:u", "ftjob-abc123")
    assert first.startswith("ftjob-") and len(first) == len("ftjob-") + 24
    assert first != mapping.job_id_for("other", "openai:u", "ftjob-abc123")
    assert first != mapping.job_id_for("acme", "azure:u", "ftjob-abc123")


def test_only_ended_jobs_are_imported():
    for status, finished in [
        ("succeeded", True),
        ("failed", True),
        ("cancelled", True),
        ("running", False),
        ("queued", False),
        ("validating_files", False),
        ("paused", False),
    ]:
        assert mapping.is_finished({"status": status}) is finished, status


def test_suffix_parsing():
    assert mapping.suffix_of("ft:gpt-4o-mini-2024-07-18:org::abc") is None
    assert mapping.suffix_of("ft:gpt-4o-mini-2024-07-18:org:my-suffix:abc") == "my-suffix"
    assert mapping.suffix_of("gpt-4o") is None
    assert mapping.suffix_of(None) is None


def test_events_are_renumbered_oldest_first_with_a_closing_event():
    raw = [
        {
            "id": "ftevent-a",
            "created_at": 10,
            "level": "info",
            "message": "Validating",
            "type": "message",
            "data": None,
        },
        {
            "id": "ftevent-b",
            "created_at": 20,
            "level": "info",
            "message": "Step 1/2",
            "type": "metrics",
            "data": {"step": 1, "train_loss": 1.5},
        },
    ]
    events = mapping.events("ftjob-0123456789abcdef01234567", raw, "Imported", 99)
    assert [e["message"] for e in events] == ["Validating", "Step 1/2", "Imported"]
    assert [e["created_at"] for e in events] == [10, 20, 99]
    assert events[0]["data"] == {} and events[1]["data"] == {"step": 1, "train_loss": 1.5}
    assert [e["id"][-10:] for e in events] == ["0000000001", "0000000002", "0000000003"]
    assert all(e["object"] == "fine_tuning.job.event" for e in events)


def test_checkpoints_keep_step_metrics_and_model_name():
    cp = mapping.checkpoint(
        "ftjob-x",
        {
            "id": "ftckpt-zz",
            "created_at": 30,
            "fine_tuned_model_checkpoint": "ft:gpt-4o-mini:org::abc:ckpt-step-2",
            "fine_tuning_job_id": "ftjob-abc123",
            "step_number": 2,
            "metrics": {"train_loss": 0.9, "valid_loss": None},
        },
    )
    assert cp["fine_tuning_job_id"] == "ftjob-x" and cp["step_number"] == 2
    assert cp["fine_tuned_model_checkpoint"] == "ft:gpt-4o-mini:org::abc:ckpt-step-2"
    assert cp["metrics"] == {"train_loss": 0.9, "step": 2}
    assert cp["id"].startswith("ftckpt-") and cp["id"] != "ftckpt-zz"


def test_metrics_rows_one_per_step_in_order():
    rows = mapping.metrics_rows(
        [
            {"step": 2, "train_loss": 0.5},
            {"step": 1, "train_loss": 1.0},
            {"step": 2, "train_loss": 0.4},
            {"train_loss": 3.0},
        ]
    )
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] == 0.4 and rows[1]["valid_loss"] is None
