"""A fake provider behind a test backend, a driver that runs the generic stages, and job factories.

The fake backend is defined here, registered by the tests that use it (``registry.register``):
nothing in ``service/`` knows it, which is the point.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core import files, tasknames
from service.core.auth import Principal
from service.core.backends.base import (
    Backend,
    BackendError,
    Finalized,
    Next,
    Progress,
    RemoteEvent,
    RemoteJob,
    Trained,
    Validated,
)
from service.core.backends.remote import RemoteState, remote_state
from service.core.clock import ManualClock
from service.core.dispatch import RecordingDispatcher
from service.core.jobs import states
from service.core.jobs.record import BackendState, Job, state_type
from service.core.jobs.stages import finalize, poll, prepare, submit, train, upload
from service.core.jobs.stages.common import StageContext
from service.core.jobs.usecases import JobsContext, create_job
from service.core.store import Store
from service.settings import Settings
from tests.conftest import SAMPLE_DATA

RESULT_ROWS = [{"step": 1, "train_loss": 1.5}, {"step": 2, "train_loss": 0.5}]


@dataclass
class FakeProvider:
    """The provider side: its jobs, how often each call was made, and faults to raise next."""

    jobs: dict[str, RemoteJob] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    # call name -> errors raised by the next calls, in turn; "create_landed" errors are raised
    # after the job was created (the create reached the provider, the answer was lost).
    faults: dict[str, list[BackendError]] = field(default_factory=dict)
    status_after_create: str = "running"
    events: list[RemoteEvent] = field(default_factory=list)  # what the provider lists, newest first

    def call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.faults.get(name):
            raise self.faults[name].pop(0)


class FakeRemoteBackend(Backend):
    """A remote-style backend over ``FakeProvider``: upload, look-before-create, sync, results."""

    state_type = RemoteState

    def __init__(self, name: str, provider: FakeProvider) -> None:
        self.name = name
        self.account = f"{name}:test"
        self.provider = provider

    def validate(
        self, model: str, hyperparameters: dict[str, Any], method: dict[str, Any] | None
    ) -> Validated:
        return Validated(dict(hyperparameters))

    def estimate(self, report: dict[str, Any], model: str, n_epochs: int) -> dict[str, Any]:
        return {"n_epochs": n_epochs, "billed_tokens": 0, "price_per_million": 0.0, "cost_usd": 0.0}

    def preparation_model(self, job: Job) -> str:
        return "gpt-4o-mini-2024-07-18"

    def after_prepare(self) -> Next:
        return Next(states.VALIDATING, "uploading", tasknames.JOB_UPLOAD)

    def upload(self, job: Job) -> tuple[str, str | None]:
        self.provider.call("upload")
        return f"file-{job.id}", None

    def find(self, job: Job) -> RemoteJob | None:
        self.provider.call("find")
        return next(
            (j for j in self.provider.jobs.values() if j.metadata.get("tuneline_job_id") == job.id), None
        )

    def create(self, job: Job) -> RemoteJob:
        self.provider.call("create")
        created = RemoteJob(
            id=f"pj-{len(self.provider.jobs) + 1}",
            status=self.provider.status_after_create,
            metadata={"tuneline_job_id": job.id},
        )
        self.provider.jobs[created.id] = created
        self.provider.call("create_landed")
        return created

    def sync(self, job: Job) -> Progress:
        self.provider.call("sync")
        assert job.provider_job_id is not None
        return Progress(self.provider.jobs[job.provider_job_id], list(self.provider.events), [])

    def cancel(self, job: Job) -> str | None:
        self.provider.call("cancel")
        return job.provider_job_id

    def finalize(self, job: Job) -> Finalized:
        self.provider.call("finalize")
        return Finalized([list(RESULT_ROWS) for _ in remote_state(job).result_files])


@state_type
@dataclass
class InlineState(BackendState):
    """The test executor's own state: how many runs it made and where it left its model."""

    kind = "test-inline"

    runs: int = 0
    model_path: str | None = None


class InlineBackend(Backend):
    """A backend Tuneline executes (like the local trainer): train_queued → train → finalize."""

    state_type = InlineState

    def __init__(self, name: str) -> None:
        self.name = name
        self.account = f"{name}:test"

    def validate(
        self, model: str, hyperparameters: dict[str, Any], method: dict[str, Any] | None
    ) -> Validated:
        return Validated({"n_epochs": hyperparameters.get("n_epochs", 1)})

    def estimate(self, report: dict[str, Any], model: str, n_epochs: int) -> dict[str, Any]:
        return {"n_epochs": n_epochs, "billed_tokens": 0, "price_per_million": 0.0, "cost_usd": 0.0}

    def preparation_model(self, job: Job) -> str:
        return "gpt-4o-mini-2024-07-18"

    def after_prepare(self) -> Next:
        return Next(states.QUEUED, "train_queued", tasknames.TRAIN_RUN)

    def train(self, job: Job) -> Trained | None:
        def outputs(j: Job) -> None:
            state = j.state
            assert isinstance(state, InlineState)
            state.runs += 1
            state.model_path = f"/models/{j.id}"

        return Trained("Trained inline; finalizing", trained_tokens=42, apply=outputs)

    def finalize(self, job: Job) -> Finalized:
        return Finalized([list(RESULT_ROWS)])


# --- driving the stages without Celery -----------------------------------------------------------

STEPS = {
    tasknames.JOB_PREPARE: prepare.run_prepare,
    tasknames.JOB_UPLOAD: upload.run_upload,
    tasknames.JOB_SUBMIT: submit.run_submit,
    tasknames.JOB_FINALIZE: finalize.run_finalize,
}


def run_task(ctx: StageContext, task: str, job_id: str, attempt: int = 0) -> str | None:
    """What the Celery task of ``task`` does, minus Celery."""
    if task == tasknames.TRAIN_RUN:
        return train.run_train(ctx, job_id)
    if task == tasknames.JOB_POLL:
        return poll.run_poll(ctx, job_id)
    return STEPS[task](ctx, job_id, attempt)


def drive(ctx: StageContext, task: str | None, job_id: str, limit: int = 50) -> None:
    """Run ``task`` and every task it hands on, then the job's polls, until nothing is left to do."""
    for _ in range(limit):
        while task:
            task = run_task(ctx, task, job_id)
        due = poll.claim_due(ctx)
        if job_id not in due:
            return
        task = tasknames.JOB_POLL


def stage_context(
    settings: Settings, store: Store, backends: dict[str, Backend], clock: ManualClock
) -> StageContext:
    return StageContext(
        settings=settings, store=store, backends=backends.__getitem__, clock=clock, jitter=lambda: 0.5
    )


def processed_file(settings: Settings, store: Store, tenant: str) -> str:
    """A training file as upload and preparation leave it (bytes on disk, record processed)."""
    data = (SAMPLE_DATA / "funds_qa.jsonl").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    file_id = "file-" + sha[:24]
    path: Path = files.blob_path(settings.data_dir, file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    files.save_record(
        store,
        files.FileRecord(
            id=file_id,
            tenant=tenant,
            bytes=len(data),
            created_at=int(time.time()),
            filename="train.jsonl",
            purpose="fine-tune",
            sha256=sha,
            status="processed",
        ),
    )
    return file_id


def new_job(
    settings: Settings,
    store: Store,
    backends: dict[str, Backend],
    provider: str,
    tenant: str = "acme",
    **params: Any,
) -> str:
    """Create a job through the create use case (validation included); its id."""
    ctx = JobsContext(settings, store, RecordingDispatcher(), backends=backends.__getitem__)
    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": processed_file(settings, store, tenant)}
    job = create_job(
        ctx, Principal(tenant=tenant, role="member", key_id="k1"), {**body, "provider": provider, **params}
    )
    return str(job["id"])
