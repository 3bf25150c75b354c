"""The generic stages against real Redis, with a fake backend and an injectable clock (no Celery)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.core import tasknames
from service.core.backends import registry
from service.core.backends.base import Backend, BackendError, ExportRequest, NotSupported
from service.core.backends.remote import remote_state
from service.core.clock import ManualClock
from service.core.errors import Unprocessable
from service.core.jobs import lifecycle, record, retry, states
from service.core.jobs.stages import poll, submit
from service.core.jobs.stages.common import WATCHDOG_S
from service.core.store import jobs as repo
from tests.core.jobs.fakes import (
    RESULT_ROWS,
    FakeProvider,
    FakeRemoteBackend,
    InlineBackend,
    InlineState,
    drive,
    new_job,
    run_task,
    stage_context,
)


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def backends(provider: FakeProvider) -> Iterator[dict[str, Backend]]:
    """Two backends only the tests know, registered for the length of a test."""
    built: dict[str, Backend] = {
        "fake": FakeRemoteBackend("fake", provider),
        "inline": InlineBackend("inline"),
    }
    for name, backend in built.items():
        registry.register(name, lambda settings, store, dispatcher, b=backend: b)
    yield built
    for name in built:
        registry.unregister(name)


def at_stage_change(clock: ManualClock, store, job_id: str) -> None:
    """Set the clock to when the job last changed stage (transitions stamp the real clock)."""
    job = record.load(store, job_id)
    assert job is not None and job.stage_changed_at is not None
    clock.advance(job.stage_changed_at - clock.now())


@pytest.fixture
def clock() -> ManualClock:
    # Transitions stamp real time; the clock starts there and moves by hand.
    return ManualClock(time.time())


def test_a_new_backend_is_one_class_and_its_registration(settings, store, backends, clock):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "inline")
    drive(ctx, tasknames.JOB_PREPARE, job_id)
    job = record.load(store, job_id)
    assert job is not None and job.status == states.SUCCEEDED and job.stage == "done", job
    assert job.fine_tuned_model == f"ft:gpt-4o-mini-2024-07-18:acme::{job_id}" and job.trained_tokens == 42
    assert isinstance(job.state, InlineState) and job.state.runs == 1 and job.state.model_path
    assert repo.list_metrics(store, job_id) == RESULT_ROWS and len(job.result_files) == 1
    stored = repo.load(store, job_id)
    assert stored is not None and stored["backend_state"]["kind"] == "test-inline"
    stages = [e["message"] for e in repo.events_since(store, job_id, 0)]
    assert any("Trained inline" in m for m in stages) and "successfully completed" in stages[-1]


def test_a_remote_job_goes_upload_submit_poll_finalize(settings, store, backends, provider, clock):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    assert run_task(ctx, tasknames.JOB_PREPARE, job_id) == tasknames.JOB_UPLOAD
    assert run_task(ctx, tasknames.JOB_UPLOAD, job_id) == tasknames.JOB_SUBMIT
    assert run_task(ctx, tasknames.JOB_SUBMIT, job_id) is None
    job = record.load(store, job_id)
    assert job is not None and job.stage == "provider_validating" and job.provider_job_id == "pj-1"
    provider.jobs["pj-1"].status = "succeeded"
    provider.jobs["pj-1"].fine_tuned_model = "ft:provider-model"
    provider.jobs["pj-1"].result_files = ["file-result"]
    clock.advance(settings.poll_interval_s)
    drive(ctx, None, job_id)
    job = record.load(store, job_id)
    assert job is not None and job.status == states.SUCCEEDED, job
    assert remote_state(job).fine_tuned_model == "ft:provider-model" and provider.calls["create"] == 1


def test_an_ambiguous_create_is_looked_up_not_repeated(settings, store, backends, provider, clock):
    """The create landed but its answer was lost: the retry finds the job; one create in all."""
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    run_task(ctx, tasknames.JOB_UPLOAD, job_id)
    provider.faults["create_landed"] = [BackendError("timed out", kind="ambiguous", code="provider_timeout")]
    with pytest.raises(retry.RetryLater):
        run_task(ctx, tasknames.JOB_SUBMIT, job_id, attempt=0)
    job = record.load(store, job_id)
    assert job is not None and remote_state(job).submit_started and job.provider_job_id is None
    assert run_task(ctx, tasknames.JOB_SUBMIT, job_id, attempt=1) is None
    job = record.load(store, job_id)
    assert job is not None and job.provider_job_id == "pj-1" and job.stage == "provider_validating"
    assert provider.calls["create"] == 1 and provider.calls["find"] == 1 and len(provider.jobs) == 1
    events = [e["message"] for e in repo.events_since(store, job_id, 0)]
    assert any("Found existing fake job pj-1 after an interrupted create" in m for m in events)


class WorkerKilled(BaseException):
    """The worker died here: nothing after this point of the step ran."""


def test_a_submit_killed_after_the_create_is_moved_on_by_the_next_attempt(
    settings, store, backends, provider, clock, monkeypatch
):
    """The worker dies right after the create answered: the redelivered task (or the watchdog's)
    finds the provider job and moves the job on; one create in all. Before, the provider job id
    was written first and the move second, and a job killed between the two stayed
    ``submitting`` for good (every later attempt saw the id and returned)."""
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    run_task(ctx, tasknames.JOB_UPLOAD, job_id)
    real_transition = lifecycle.transition

    def killed(*args, **kwargs):
        raise WorkerKilled

    monkeypatch.setattr(lifecycle, "transition", killed)
    with pytest.raises(WorkerKilled):
        run_task(ctx, tasknames.JOB_SUBMIT, job_id)
    monkeypatch.setattr(lifecycle, "transition", real_transition)
    assert run_task(ctx, tasknames.JOB_SUBMIT, job_id) is None
    job = record.load(store, job_id)
    assert job is not None and job.stage == "provider_validating" and job.provider_job_id == "pj-1", job
    assert provider.calls["create"] == 1


def test_a_record_left_submitting_with_its_provider_job_is_moved_on(
    settings, store, backends, provider, clock
):
    """A record an earlier release left behind (the provider job written, the move not) is moved on
    by the watchdog's submit, without a second create."""
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    run_task(ctx, tasknames.JOB_UPLOAD, job_id)
    created = backends["fake"].create(record.load(store, job_id))

    def left_behind(j):
        remote_state(j).submit_started = True
        j.provider_job_id, j.provider_status = created.id, created.status

    record.modify(store, job_id, left_behind)
    at_stage_change(clock, store, job_id)
    clock.advance(WATCHDOG_S)
    assert poll.run_poll(ctx, job_id) == tasknames.JOB_SUBMIT  # the watchdog hands it on
    assert run_task(ctx, tasknames.JOB_SUBMIT, job_id) is None
    job = record.load(store, job_id)
    assert job is not None and job.stage == "provider_validating" and job.provider_job_id == created.id
    assert provider.calls["create"] == 1


def test_a_create_that_dies_before_its_task_is_sent_leaves_the_job_to_the_watchdog(
    settings, store, backends, clock, monkeypatch
):
    """The API process dies after storing the job, before it enqueued the prepare task (or any
    write after the job): the job already has its watchdog entry, which hands it on."""
    ctx = stage_context(settings, store, backends, clock)
    stored: list[str] = []
    real_insert = record.insert

    def insert_then_die(store_, job, score):
        real_insert(store_, job, score)
        stored.append(job.id)
        raise WorkerKilled

    monkeypatch.setattr(record, "insert", insert_then_die)
    with pytest.raises(WorkerKilled):
        new_job(settings, store, backends, "fake")
    monkeypatch.setattr(record, "insert", real_insert)
    (job_id,) = stored
    due = repo.poll_due_at(store, job_id)
    assert due is not None, "the stored job has no watchdog entry"
    clock.advance(due - clock.now())
    assert poll.claim_due(ctx) == [job_id]
    assert poll.run_poll(ctx, job_id) == tasknames.JOB_PREPARE


def test_a_train_task_killed_as_it_hands_on_leaves_finalize_to_the_watchdog(
    settings, store, backends, clock, monkeypatch
):
    """The worker dies right after the move to ``finalizing``, before it enqueued the finalize: the
    watchdog runs it. Before, the watchdog's entry was written after the move, and a job trained
    under a lease (which has no poll entry) stayed ``finalizing`` for good."""
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "inline")
    assert run_task(ctx, tasknames.JOB_PREPARE, job_id) == tasknames.TRAIN_RUN
    repo.unschedule_poll(store, job_id)  # as while the local trainer holds the job under its lease
    real = lifecycle.try_transition

    def moved_then_killed(*args, **kwargs):
        real(*args, **kwargs)
        raise WorkerKilled

    monkeypatch.setattr(lifecycle, "try_transition", moved_then_killed)
    with pytest.raises(WorkerKilled):
        run_task(ctx, tasknames.TRAIN_RUN, job_id)
    monkeypatch.setattr(lifecycle, "try_transition", real)
    assert run_task(ctx, tasknames.TRAIN_RUN, job_id) is None  # a redelivered train task: nothing to do
    at_stage_change(clock, store, job_id)
    clock.advance(WATCHDOG_S)
    assert poll.claim_due(ctx) == [job_id]
    drive(ctx, tasknames.JOB_POLL, job_id)
    job = record.load(store, job_id)
    assert job is not None and job.status == states.SUCCEEDED, job


def test_polls_keep_a_fixed_rate_from_their_due_times(settings, store, backends, provider, clock):
    """The next sync is due an interval after the last was due, not after the (late) sync ran:
    the wait for a poll's turn is not added to every interval. A very late poll is next due half
    an interval after it ran."""
    ctx = stage_context(settings, store, backends, clock)
    interval = settings.poll_interval_s
    job_id = new_job(settings, store, backends, "fake")
    for task in (tasknames.JOB_PREPARE, tasknames.JOB_UPLOAD, tasknames.JOB_SUBMIT):
        run_task(ctx, task, job_id)
    due = repo.poll_due_at(store, job_id)
    assert due == pytest.approx(clock.now() + interval, abs=1e-3)
    for late in (0.3, 0.1, 0.2):  # each poll runs this part of an interval after it was due
        clock.advance(due + late * interval - clock.now())
        assert poll.run_poll(ctx, job_id) is None
        assert repo.poll_due_at(store, job_id) == pytest.approx(due + interval, abs=1e-3)
        due += interval
    clock.advance(due + 0.8 * interval - clock.now())
    poll.run_poll(ctx, job_id)
    assert repo.poll_due_at(store, job_id) == pytest.approx(clock.now() + 0.5 * interval, abs=1e-3)
    job = record.load(store, job_id)
    assert job is not None and job.stage == "training" and provider.calls["sync"] == 4


def test_a_transient_create_error_retries_with_backoff_then_fails_with_its_code(
    settings, store, backends, provider, clock
):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    run_task(ctx, tasknames.JOB_UPLOAD, job_id)
    busy = [BackendError("busy", kind="transient", code="provider_http_429") for _ in range(20)]
    provider.faults["create"] = busy
    delays = []
    for attempt in range(retry.SUBMIT.max_attempts or 0):
        try:
            run_task(ctx, tasknames.JOB_SUBMIT, job_id, attempt)
        except retry.RetryLater as later:
            delays.append(later.delay)
    assert len(delays) == (retry.SUBMIT.max_attempts or 0) - 1  # the last attempt gives up
    assert delays == sorted(delays) and delays[0] < delays[-1] <= retry.SUBMIT.cap_s
    job = record.load(store, job_id)
    assert job is not None and job.status == states.FAILED and job.error is not None
    assert job.error["code"] == "provider_http_429" and "gave up after 8 attempts" in job.error["message"]
    assert provider.calls["create"] == retry.SUBMIT.max_attempts  # nothing was created


def test_retry_after_is_honoured(settings, store, backends, provider, clock):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    provider.faults["upload"] = [BackendError("slow down", kind="transient", code="rate", retry_after=17.0)]
    with pytest.raises(retry.RetryLater) as later:
        run_task(ctx, tasknames.JOB_UPLOAD, job_id, attempt=0)
    assert later.value.delay == 17.0
    assert run_task(ctx, tasknames.JOB_UPLOAD, job_id, attempt=1) == tasknames.JOB_SUBMIT


def test_a_permanent_error_fails_at_once_with_its_code(settings, store, backends, provider, clock):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    provider.faults["upload"] = [BackendError("file refused", kind="permanent", code="invalid_file_format")]
    assert run_task(ctx, tasknames.JOB_UPLOAD, job_id) is None
    job = record.load(store, job_id)
    assert (
        job is not None
        and job.status == states.FAILED
        and job.error
        == {
            "code": "invalid_file_format",
            "message": "file refused",
            "param": None,
        }
    )


def test_poll_backs_off_on_errors_and_tolerates_a_few_permanent_ones(
    settings, store, backends, provider, clock
):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    for task in (tasknames.JOB_PREPARE, tasknames.JOB_UPLOAD, tasknames.JOB_SUBMIT):
        run_task(ctx, task, job_id)
    provider.faults["sync"] = [
        BackendError("down", kind="transient", code="provider_http_503") for _ in range(3)
    ]
    gaps = []
    for _ in range(3):
        assert poll.run_poll(ctx, job_id) is None
        gaps.append((repo.poll_due_at(store, job_id) or 0) - clock.now())
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1]
    job = record.load(store, job_id)
    assert job is not None and remote_state(job).poll_failures == 3 and job.status == states.VALIDATING
    gone = [BackendError("no such job", kind="permanent", code="provider_http_404") for _ in range(2)]
    provider.faults["sync"] = gone
    poll.run_poll(ctx, job_id)
    poll.run_poll(ctx, job_id)  # the 5th failure in a row
    job = record.load(store, job_id)
    assert (
        job is not None
        and job.status == states.FAILED
        and job.error
        and job.error["code"] == "provider_http_404"
    )


def test_the_watchdog_re_enqueues_a_lost_stage_task(settings, store, backends, clock):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    # The prepare message was lost: nothing runs until the watchdog looks.
    assert poll.claim_due(ctx) == []
    clock.advance(WATCHDOG_S + 1)  # the job was created on the real clock, a moment after ours
    assert poll.claim_due(ctx) == [job_id]
    assert poll.run_poll(ctx, job_id) == tasknames.JOB_PREPARE
    assert run_task(ctx, tasknames.JOB_PREPARE, job_id) == tasknames.JOB_UPLOAD
    at_stage_change(clock, store, job_id)
    clock.advance(WATCHDOG_S / 2)
    assert poll.run_poll(ctx, job_id) is None  # uploading for less than the interval: left alone
    clock.advance(WATCHDOG_S)
    assert poll.run_poll(ctx, job_id) == tasknames.JOB_UPLOAD


def test_a_job_waiting_for_its_executor_is_handed_over_once_then_left_to_it(settings, store, backends, clock):
    """train_queued is not a watchdog stage: the backend's executor holds the job (start, again)."""
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "inline")
    assert run_task(ctx, tasknames.JOB_PREPARE, job_id) == tasknames.TRAIN_RUN  # ... and lost
    clock.advance(WATCHDOG_S + 1)
    assert poll.claim_due(ctx) == [job_id]
    assert poll.run_poll(ctx, job_id) == tasknames.TRAIN_RUN  # the inline backend's start
    assert repo.poll_due_at(store, job_id) is None  # from here on, its executor's business
    drive(ctx, tasknames.TRAIN_RUN, job_id)
    job = record.load(store, job_id)
    assert job is not None and job.status == states.SUCCEEDED


def test_cancel_before_the_answer_of_a_create_cancels_the_orphan(settings, store, backends, provider, clock):
    ctx = stage_context(settings, store, backends, clock)
    job_id = new_job(settings, store, backends, "fake")
    run_task(ctx, tasknames.JOB_PREPARE, job_id)
    run_task(ctx, tasknames.JOB_UPLOAD, job_id)
    provider.faults["create_landed"] = [BackendError("reset", kind="ambiguous", code="provider_unreachable")]
    with pytest.raises(retry.RetryLater):
        run_task(ctx, tasknames.JOB_SUBMIT, job_id)
    lifecycle.transition(store, job_id, states.CANCELLED, "done", "cancelled by the user")
    backends["fake"].cancel = lambda job: (provider.call("cancel"), "pj-1")[1]  # type: ignore[method-assign]
    submit.run_cancel(ctx, job_id)
    job = record.load(store, job_id)
    assert job is not None and job.provider_job_id == "pj-1" and provider.calls["cancel"] == 1


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_what_no_backend_supports_yet_is_a_409_naming_the_job_status(settings, store, backends, action):
    job_id = new_job(settings, store, backends, "inline")
    job = record.load(store, job_id)
    assert job is not None
    local_backend = registry.Backends(settings, store)("local")
    for backend in (backends["fake"], local_backend):
        call = getattr(backend, action)
        with pytest.raises(NotSupported) as refused:
            call(job)
        error = refused.value.envelope()["error"]
        assert refused.value.status == 409 and error["type"] == "conflict_error"
        assert (
            error["code"] == "not_supported" and f"job {job_id} (status validating_files)" in error["message"]
        )


def test_export_is_refused_by_a_backend_without_it_and_waits_for_a_local_model(settings, store, backends):
    job_id = new_job(settings, store, backends, "inline")
    job = record.load(store, job_id)
    assert job is not None
    request = ExportRequest(model="ft:x", format="merged", quantization="f16")
    with pytest.raises(NotSupported) as refused:
        backends["fake"].export(job, request)
    assert refused.value.status == 409 and f"export the model of job {job_id}" in refused.value.message
    with pytest.raises(Unprocessable) as waiting:
        registry.Backends(settings, store)("local").export(job, request)
    assert waiting.value.code == "model_not_ready" and job_id in waiting.value.message
