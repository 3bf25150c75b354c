"""Use cases at the API edge: create, read, list, cancel, pause and resume jobs; events and metrics."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from service.core import files, finetuned_models, ids, tasknames
from service.core.auth import Principal
from service.core.backends import registry
from service.core.backends.base import Backend
from service.core.datasets import default_epochs, reinforcement
from service.core.datasets.checks import PREFERENCE, REINFORCEMENT
from service.core.dispatch import Dispatcher
from service.core.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from service.core.evaluation import methods as evaluation_methods
from service.core.graders.usecases import reward_grader
from service.core.jobs import integrations, lifecycle, metrics, record, seeds, states
from service.core.jobs.record import Job
from service.core.jobs.stages.common import WATCHDOG_S
from service.core.jobs.views import public_job
from service.core.pagination import page_list
from service.core.preparation import get_report
from service.core.store import Store
from service.core.store import jobs as repo
from service.core.webhooks.signing import DEFAULT_EVENTS
from service.core.webhooks.ssrf import UnsafeWebhookURL, check_url
from service.settings import Settings

SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The data format each method trains on (None: any but these).
METHOD_FORMATS = {"dpo": PREFERENCE, "reinforcement": REINFORCEMENT}
METHOD_DATA = {
    "dpo": "preference rows (input, preferred_output, non_preferred_output)",
    "reinforcement": "reinforcement rows (messages ending on a user message, plus the grader's fields)",
}
CONTROL_WAIT_S = 10.0  # how long a pause or resume waits for a poll of the job in flight


@dataclass
class JobsContext:
    settings: Settings
    store: Store
    dispatcher: Dispatcher
    backends: Callable[[str], Backend] | None = None

    def backend(self, name: str) -> Backend:
        if self.backends is None:
            self.backends = registry.Backends(self.settings, self.store, self.dispatcher)
        return self.backends(name)


def _usable_file(ctx: JobsContext, principal: Principal, file_id: str, param: str) -> files.FileRecord:
    record = files.load_file(ctx.store, file_id)
    if record is None or record.tenant != principal.tenant:
        raise InvalidRequest(f"File {file_id!r} was not found.", param=param, code="file_not_found")
    if record.status == "uploaded":
        raise Unprocessable(
            f"File {file_id} is still being processed; retry when its status is 'processed'.",
            param=param,
            code="file_not_ready",
            headers={"x-should-retry": "false"},
        )
    if record.status != "processed":
        raise Unprocessable(
            f"File {file_id} failed preparation: {record.status_details}",
            param=param,
            code="invalid_training_file" if param == "training_file" else "invalid_file",
        )
    return record


def _epochs(hyper: dict[str, Any], method: dict[str, Any] | None, examples: int) -> int:
    value = hyper.get("n_epochs", "auto")
    if method:
        for kind in ("supervised", "dpo", "reinforcement"):
            value = ((method.get(kind) or {}).get("hyperparameters") or {}).get("n_epochs", value)
    return int(value) if isinstance(value, int) else default_epochs(examples)


def create_job(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
    """Validate everything a client could get wrong, then record the job and start the pipeline."""
    return start_job(ctx, build_job(ctx, principal, params))


def _check_test_file(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> None:
    """A test file must be held out and in the training file's format (it is answered, then scored)."""
    test_id = params["test_file"]
    if test_id == params["training_file"]:
        raise InvalidRequest(
            "test_file must differ from training_file (held-out data).",
            param="test_file",
            code="invalid_test_file",
        )
    _usable_file(ctx, principal, test_id, "test_file")
    test_format = (get_report(ctx.store, test_id) or {}).get("format")
    train_format = (get_report(ctx.store, params["training_file"]) or {}).get("format")
    evaluator = evaluation_methods.for_method(params.get("method"))
    if test_format not in evaluator.test_formats or (train_format and test_format != train_format):
        raise Unprocessable(
            f"test_file {test_id} is in format {test_format!r}; a test set needs the training file's "
            f"format ({train_format!r}): {evaluator.test_rows}.",
            param="test_file",
            code="invalid_test_file",
        )


def _check_owned_model(ctx: JobsContext, principal: Principal, model: str) -> Job | None:
    """A fine-tuned model as the base must be one of the caller's own: the job that trained it."""
    if model.startswith("ft:"):
        return finetuned_models.resolve(ctx.store, principal, model)
    return None


def _check_method_format(
    method: dict[str, Any] | None, report: dict[str, Any], file_id: str, param: str = "training_file"
) -> None:
    """DPO trains on preference rows only, reinforcement on reinforcement rows only, and supervised
    methods on anything but them."""
    kind = (method or {}).get("type") or "supervised"
    found = report.get("format")
    wanted_format = METHOD_FORMATS.get(kind)
    if found is None or (found == wanted_format if wanted_format else found not in METHOD_FORMATS.values()):
        return
    wanted = METHOD_DATA.get(kind, "chat or prompt/completion rows")
    raise Unprocessable(
        f"{param} {file_id} is in format {found!r}; method.type {kind!r} needs {wanted}.",
        param=param,
        code=f"invalid_{param}",
    )


def _check_method_data(ctx: JobsContext, params: dict[str, Any], report: dict[str, Any]) -> None:
    """The training and validation files suit the job's method (a test file: ``_check_test_file``)."""
    method = params.get("method")
    _check_method_format(method, report, params["training_file"])
    if params.get("validation_file"):
        validation = get_report(ctx.store, params["validation_file"]) or {}
        _check_method_format(method, validation, params["validation_file"], "validation_file")
    split = (params.get("prepare") or {}).get("split") or {}
    if (method or {}).get("type") == "reinforcement" and (params.get("test_file") or split.get("test")):
        # Tuneline scores the held-out answers itself, with this grader: it must run here.
        reward_grader(ctx.settings, ((method or {}).get("reinforcement") or {}).get("grader"))


def _check_files(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> files.FileRecord:
    """The training file, usable; the validation file too, when given (the test file is checked
    after the method's data: ``_check_test_file``)."""
    training = _usable_file(ctx, principal, params["training_file"], "training_file")
    if params.get("validation_file"):
        _usable_file(ctx, principal, params["validation_file"], "validation_file")
    return training


def _webhook(ctx: JobsContext, params: dict[str, Any]) -> dict[str, Any] | None:
    webhook = params.get("webhook")
    if not webhook:
        return None
    try:
        check_url(webhook["url"], allow_loopback=ctx.settings.webhook_allow_loopback)
    except UnsafeWebhookURL as exc:
        raise Unprocessable(str(exc), param="webhook.url", code="unsafe_webhook_url") from None
    return {"url": webhook["url"], "events": list(webhook.get("events") or DEFAULT_EVENTS)}


def build_job(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> Job:
    """The job record for ``params``, validated; nothing is stored or started."""
    provider = params.get("provider") or ctx.settings.provider_default
    if provider not in registry.names():
        raise InvalidRequest(
            f"provider must be one of {', '.join(registry.names())}",
            param="provider",
            code="invalid_provider",
        )
    backend = ctx.backend(provider)  # refuses an unconfigured provider now, not in a worker
    model = params["model"]
    hyper = backend.validate(
        model, dict(params.get("hyperparameters") or {}), params.get("method")
    ).hyperparameters
    compute = backend.validate_compute(params.get("compute"))
    if params.get("validation_file") and params["validation_file"] == params["training_file"]:
        raise InvalidRequest(
            "validation_file must differ from training_file (held-out data).",
            param="validation_file",
            code="invalid_validation_file",
        )
    suffix = params.get("suffix")
    if suffix is not None and not SUFFIX_RE.match(suffix):
        raise InvalidRequest(
            "suffix must be 1-64 letters, digits, '-' or '_'.", param="suffix", code="invalid_suffix"
        )
    source = _check_owned_model(ctx, principal, model)
    training = _check_files(ctx, principal, params)
    webhook = _webhook(ctx, params)
    report = get_report(ctx.store, training.id) or {}
    _check_method_data(ctx, params, report)
    if params.get("test_file"):
        _check_test_file(ctx, principal, params)
    counts = report.get("counts") or {}
    examples = int(counts.get("kept") or counts.get("valid") or 0)
    n_epochs = _epochs(hyper, params.get("method"), examples)
    estimate = backend.estimate(report, model, n_epochs)
    if (params.get("method") or {}).get("type") == "reinforcement":
        # What the run samples and how many steps it takes (the grader scores every sample).
        knobs = {**hyper, **((params["method"].get("reinforcement") or {}).get("hyperparameters") or {})}
        estimate["reinforcement"] = reinforcement.estimate(
            int(counts.get("train") or examples), n_epochs, knobs
        )
    max_cost = params.get("max_cost_usd")
    if max_cost is not None and estimate["cost_usd"] > max_cost:
        raise Unprocessable(
            f"Estimated cost ${estimate['cost_usd']:.2f} ({estimate['billed_tokens']} billed tokens over "
            f"{estimate['n_epochs']} epochs) exceeds max_cost_usd ${max_cost:.2f}.",
            param="max_cost_usd",
            code="budget_exceeded",
            headers={"x-should-retry": "false"},
        )
    seed, prepare = seeds.seeded(params.get("seed"), params.get("prepare"))
    trackers = integrations.checked(params.get("integrations"), provider, backend.integrations)
    now = time.time()
    job = Job(
        id=ids.new_id("job"),
        tenant=principal.tenant,
        created_at=int(now),
        updated_at=int(now),
        model=model,
        training_file=training.id,
        validation_file=params.get("validation_file"),
        test_file=params.get("test_file"),
        hyperparameters=hyper,
        method=params.get("method"),
        suffix=suffix,
        seed=seed,
        metadata=params.get("metadata"),
        provider=provider,
        webhook=webhook,
        max_cost_usd=max_cost,
        priority=int(params.get("priority") or 0),
        compute=compute,
        estimate=estimate,
        prepare=prepare,
        integrations=trackers,
        extensions={k: params[k] for k in record.extensions() if params.get(k) is not None},
        status=states.VALIDATING,
        stage="preparing",
        stage_changed_at=now,
        state=backend.state_type(),
        # Whether the held-out evaluation also runs the base is the method's evaluator's rule
        # (``evaluation.methods``: DPO and reinforcement compare with the model they started from).
    )
    if source is not None:
        backend.continue_from(job, source)
    return job


# Nothing is trained for an evaluate-only job: what only training uses has no meaning there.
TRAINING_ONLY = ("hyperparameters", "method", "suffix", "max_cost_usd")
NO_TRAINING = {"n_epochs": 0, "billed_tokens": 0, "price_per_million": 0.0, "cost_usd": 0.0}


def build_evaluation(ctx: JobsContext, principal: Principal, params: dict[str, Any]) -> Job:
    """An evaluate-only job, validated (nothing stored or started): the caller's existing
    fine-tuned model ``params["model"]`` answers the test set that preparing ``params``' data
    holds out, the same one a job trained on that data gets; nothing is trained.

    The model is served by the backend of the job that made it (an imported OpenAI model by the
    remote backend, a local one by the infer workers); its preparation is that job's own.
    """
    for name in TRAINING_ONLY:
        if params.get(name) is not None:
            raise InvalidRequest(
                f"{name} has no meaning for an evaluate-only candidate: nothing is trained.",
                param=name,
                code="invalid_evaluate_only",
            )
    model = params["model"]
    source = finetuned_models.resolve(ctx.store, principal, model)
    provider = params.get("provider")
    if provider is not None and provider != source.provider:
        raise InvalidRequest(
            f"{model} is served by provider {source.provider!r}, not {provider!r}.",
            param="provider",
            code="invalid_provider",
        )
    backend = ctx.backend(source.provider)  # refuses a provider this deployment cannot reach
    backend.validate(source.model, {}, None)  # its base model: what preparation checks data against
    split = (params.get("prepare") or {}).get("split") or {}
    if not params.get("test_file") and not float(split.get("test") or 0) > 0:
        raise InvalidRequest(
            "An evaluation needs a test set: test_file, or prepare.split.test > 0.",
            param="test_file",
            code="missing_test_set",
        )
    training = _check_files(ctx, principal, params)
    webhook = _webhook(ctx, params)
    _check_method_data(ctx, {**params, "method": None}, get_report(ctx.store, training.id) or {})
    if params.get("test_file"):
        _check_test_file(ctx, principal, {**params, "method": None})
    now = time.time()
    return Job(
        id=ids.new_id("job"),
        tenant=principal.tenant,
        created_at=int(now),
        updated_at=int(now),
        model=source.model,
        training_file=training.id,
        validation_file=params.get("validation_file"),
        test_file=params.get("test_file"),
        seed=params.get("seed"),
        metadata=params.get("metadata"),
        provider=source.provider,
        webhook=webhook,
        estimate=dict(NO_TRAINING),
        prepare=params.get("prepare"),
        status=states.VALIDATING,
        stage="preparing",
        stage_changed_at=now,
        evaluated_model=model,
        evaluated_job=source.id,
        state=backend.state_type(),
    )


def start_job(ctx: JobsContext, job: Job) -> dict[str, Any]:
    """Store a built job and start its pipeline."""
    now = time.time()
    # The pipeline watchdog (stages.poll) before the job: a process that dies between the two
    # writes leaves an entry the watchdog drops, never a job nothing looks at.
    repo.schedule_poll(ctx.store, job.id, now + WATCHDOG_S)
    record.insert(ctx.store, job, now * 1000)
    lifecycle.record_event(ctx.store, job.id, f"Created fine-tuning job: {job.id} (provider {job.provider})")
    ctx.dispatcher.enqueue(tasknames.JOB_PREPARE, job.id)
    return public_job(repo.load(ctx.store, job.id) or job.to_dict())


def get_job(store: Store, principal: Principal, job_id: str) -> dict[str, Any]:
    return _readable(principal, repo.read(store, job_id), job_id)


def _readable(principal: Principal, job: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    if job is None or not principal.can_read(job["tenant"]):
        raise NotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found")
    return job


def list_jobs(
    store: Store, principal: Principal, after: str | None, limit: int, filters: dict[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    tenant = principal.scope(filters.get("tenant"))
    metadata = filters.get("metadata") or {}

    def keep(job: dict[str, Any]) -> bool:
        if filters.get("status") and job["status"] != filters["status"]:
            return False
        if filters.get("provider") and job["provider"] != filters["provider"]:
            return False
        return all((job.get("metadata") or {}).get(k) == v for k, v in metadata.items())

    found, has_more = repo.walk(store, tenant, after, limit, keep)
    return [public_job(j) for j in found], has_more


def _not_cancellable(job: dict[str, Any]) -> Conflict:
    return Conflict(
        f"Job {job['id']} has already {job['status']}; it cannot be cancelled.",
        code="job_not_cancellable",
        headers={"x-should-retry": "false"},
    )


def cancel_job(ctx: JobsContext, principal: Principal, job_id: str) -> dict[str, Any]:
    job = get_job(ctx.store, principal, job_id)
    if job.get("import_id"):
        # History copied from a provider account: Tuneline never acts on that job at the provider.
        raise Conflict(
            f"Job {job['id']} was imported ({job['import_id']}) from {job['provider']} job "
            f"{job.get('provider_job_id')}; imported jobs are read-only and cannot be cancelled.",
            code="job_imported",
            headers={"x-should-retry": "false"},
        )
    # A repeat of the current state is a no-op for `transition`, so a second cancel is refused here.
    if job["status"] in states.TERMINAL:
        raise _not_cancellable(job)
    try:
        cancelled = lifecycle.transition(
            ctx.store, job_id, states.CANCELLED, "done", "Fine-tuning job cancelled by the user."
        )
    except states.IllegalTransition:  # it ended between the read and the transition
        raise _not_cancellable(get_job(ctx.store, principal, job_id)) from None
    # The cancel task asks the backend to stop its side (a no-op where there is none).
    ctx.dispatcher.enqueue(tasknames.JOB_CANCEL, job_id)
    return public_job(cancelled.to_dict())


def _not_controllable(job: dict[str, Any], what: str) -> Conflict:
    return Conflict(
        f"Job {job['id']} is {job['status']} ({job['stage']}); it cannot be {what}.",
        code={"paused": "job_not_pausable", "resumed": "job_not_resumable"}[what],
        headers={"x-should-retry": "false"},
    )


@contextmanager
def _poll_lock(store: Store, job_id: str, lock_s: int) -> Iterator[None]:
    """Hold the job's poll lock, so that a sync in flight (which read the provider's job before
    a pause or resume) cannot write its stale status over the one this call sets."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + CONTROL_WAIT_S
    while not repo.acquire_lock(store, job_id, lock_s, token):
        if time.monotonic() >= deadline:
            raise Conflict(
                f"Job {job_id} is being synced with its provider; try again.",
                code="job_busy",
                headers={"x-should-retry": "true"},
            )
        time.sleep(0.05)
    try:
        yield
    finally:
        repo.release_lock(store, job_id, token)


def pause_job(ctx: JobsContext, principal: Principal, job_id: str) -> dict[str, Any]:
    """Pause a training job (OpenAI's ``POST .../pause``); 409 naming its status otherwise."""
    get_job(ctx.store, principal, job_id)
    with _poll_lock(ctx.store, job_id, ctx.settings.poll_lock_s):
        return _pause(ctx, principal, job_id)


def _pause(ctx: JobsContext, principal: Principal, job_id: str) -> dict[str, Any]:
    found = get_job(ctx.store, principal, job_id)
    if (found["status"], found["stage"]) != (states.RUNNING, "training"):
        raise _not_controllable(found, "paused")
    job = Job.from_dict(found)
    status, stage = ctx.backend(job.provider).pause(job)
    try:
        paused = lifecycle.transition(ctx.store, job_id, status, stage, "Fine-tuning job paused by the user.")
    except states.IllegalTransition:  # it moved on (finished training, cancelled) meanwhile
        raise _not_controllable(get_job(ctx.store, principal, job_id), "paused") from None
    return public_job(paused.to_dict())


def resume_job(ctx: JobsContext, principal: Principal, job_id: str) -> dict[str, Any]:
    """Resume a paused job (OpenAI's ``POST .../resume``): it goes back to where it trains."""
    get_job(ctx.store, principal, job_id)
    with _poll_lock(ctx.store, job_id, ctx.settings.poll_lock_s):
        return _resume(ctx, principal, job_id)


def _resume(ctx: JobsContext, principal: Principal, job_id: str) -> dict[str, Any]:
    found = get_job(ctx.store, principal, job_id)
    if found["status"] != states.PAUSED:
        raise _not_controllable(found, "resumed")
    job = Job.from_dict(found)
    backend = ctx.backend(job.provider)
    status, stage = backend.resume(job)
    waits_for_executor = stage == backend.after_prepare().stage
    if waits_for_executor:
        # Waiting for its executor again (the local train queue): watched (before the move, so a
        # process that dies between them leaves no job unwatched), and woken below. A provider's
        # job needs neither: its poll kept syncing it while it was paused.
        repo.schedule_poll(ctx.store, job_id, time.time() + WATCHDOG_S)
    try:
        resumed = lifecycle.transition(
            ctx.store, job_id, status, stage, "Fine-tuning job resumed by the user."
        )
    except states.IllegalTransition:
        raise _not_controllable(get_job(ctx.store, principal, job_id), "resumed") from None
    if waits_for_executor:
        task = backend.start(resumed)
        if task:
            ctx.dispatcher.enqueue(task, job_id)
    return public_job(resumed.to_dict())


def list_events(
    store: Store, principal: Principal, job_id: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    return repo.list_events(store, get_job(store, principal, job_id)["id"], after, limit)


def list_checkpoints(
    store: Store, principal: Principal, job_id: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first; ``after`` is a checkpoint id."""
    return page_list(repo.list_checkpoints(store, get_job(store, principal, job_id)["id"]), after, limit)


def job_metrics(store: Store, principal: Principal, job_id: str) -> list[dict[str, Any]]:
    return repo.list_metrics(store, get_job(store, principal, job_id)["id"])


def job_metrics_csv(store: Store, principal: Principal, job_id: str) -> str:
    job = get_job(store, principal, job_id)
    return metrics.to_csv(repo.list_metrics(store, job["id"]), metrics.columns_for(job.get("method")))


def job_metrics_png(store: Store, principal: Principal, job_id: str) -> bytes:
    job = get_job(store, principal, job_id)
    title = f"{job['id']} ({job['model']}, {job['status']})"
    return metrics.plot_png(
        repo.list_metrics(store, job["id"]), title, metrics.columns_for(job.get("method"))
    )


@dataclass(frozen=True)
class Followed:
    """One step of following a job: an event, a wait, or the end (with the final status)."""

    kind: Literal["event", "wait", "done"]
    data: dict[str, Any]


def follow_events(store: Store, job_id: str, poll_s: float, max_s: float) -> Iterator[Followed]:
    """Every event of a job, oldest first, then new ones as they come, until the job ends."""
    sent = 0
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        for event in repo.events_since(store, job_id, sent):
            sent += 1
            yield Followed("event", event)
        job = repo.load(store, job_id)
        if job is None or job["status"] in states.TERMINAL:
            yield Followed("done", {"status": job["status"] if job else None})
            return
        yield Followed("wait", {})
        time.sleep(poll_s)
