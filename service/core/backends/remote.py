"""The remote backend: OpenAI, Azure OpenAI and the sandbox, one implementation over the SDK.

Tuneline uploads the prepared files, creates exactly one provider job (looking before creating
again), polls it, and reads its result files. Request extensions such as the sandbox's fault
options are forwarded because the backend declares them in ``extensions``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import openai

from service.core import tasknames
from service.core.backends import local
from service.core.backends.base import (
    Backend,
    BackendError,
    Budget,
    CompletionRequest,
    CompletionResult,
    Finalized,
    Next,
    NotSupported,
    Progress,
    RemoteCheckpoint,
    RemoteEvent,
    RemoteJob,
    Validated,
    WantsDetail,
)
from service.core.backends.errors import control_error, map_error
from service.core.datasets import resolve_model
from service.core.datasets.models import training_cost_usd
from service.core.errors import InvalidRequest, Unprocessable
from service.core.jobs import states
from service.core.jobs.integrations import WANDB
from service.core.jobs.metrics import METRIC_COLUMNS
from service.core.jobs.record import BackendState, Job, state_of, state_type
from service.core.store import Store
from service.core.store import jobs as repo

# OpenAI's job list answers up to 100 jobs a page, newest first.
LIST_PAGE = 100
DETAIL_THREADS = 8  # events and checkpoints read at the same time in one sync_many
# Provider clocks and ours differ a little: a list is read this far past our oldest job's creation.
LIST_CLOCK_SLACK_S = 300
# OpenAI's result files have used both names for the training accuracy column.
_COLUMN_ALIASES = {"train_accuracy": "train_mean_token_accuracy"}


def _job(raw: Any) -> RemoteJob:
    error = getattr(raw, "error", None)
    error_dict = None
    if error is not None and (getattr(error, "message", None) or getattr(error, "code", None)):
        error_dict = {"code": error.code, "message": error.message, "param": getattr(error, "param", None)}
    return RemoteJob(
        id=raw.id,
        status=raw.status,
        model=getattr(raw, "model", "") or "",
        fine_tuned_model=raw.fine_tuned_model,
        trained_tokens=raw.trained_tokens,
        error=error_dict,
        result_files=list(raw.result_files or []),
        estimated_finish=getattr(raw, "estimated_finish", None),
        metadata=dict(getattr(raw, "metadata", None) or {}),
        created_at=getattr(raw, "created_at", None),
    )


def parse_result_csv(payload: bytes) -> list[dict[str, Any]]:
    """Result file rows with OpenAI's metric names; accepts plain or base64-wrapped CSV."""
    text = payload.decode("utf-8-sig", errors="replace").strip()
    if text and "," not in text.splitlines()[0]:
        try:
            text = base64.b64decode(text, validate=False).decode("utf-8-sig").strip()
        except (binascii.Error, UnicodeDecodeError):
            return []
    rows: list[dict[str, Any]] = []
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {}
        for name, value in raw.items():
            if name is None:
                continue
            key = _COLUMN_ALIASES.get(name.strip(), name.strip())
            if key not in METRIC_COLUMNS:
                continue
            if value is None or value.strip() == "":
                row[key] = None
                continue
            try:
                row[key] = int(value) if key == "step" else float(value)
            except ValueError:
                row[key] = None
        if row.get("step") is not None:
            rows.append(row)
    return rows


class SDKClient:
    """Talks to OpenAI, Azure OpenAI, or any API of the same shape (the sandbox included)."""

    def __init__(self, client: openai.OpenAI) -> None:
        self._client = client
        # The paid create call is never retried by the SDK: we look before creating again.
        self._create_client = client.with_options(max_retries=0)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise map_error(exc) from exc

    def upload_file(self, path: Path, filename: str) -> str:
        with path.open("rb") as fh:
            created = self._call(self._client.files.create, file=(filename, fh), purpose="fine-tune")
        return str(created.id)

    def file_exists(self, file_id: str) -> bool:
        try:
            self._call(self._client.files.retrieve, file_id)
        except BackendError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_job(self, request: CreateJobRequest) -> RemoteJob:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "training_file": request.training_file,
            "metadata": request.metadata,
        }
        if request.validation_file:
            kwargs["validation_file"] = request.validation_file
        if request.method:
            kwargs["method"] = request.method
        elif request.hyperparameters:
            kwargs["hyperparameters"] = request.hyperparameters
        if request.suffix:
            kwargs["suffix"] = request.suffix
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.integrations:
            kwargs["integrations"] = request.integrations
        if request.extra_body:
            kwargs["extra_body"] = request.extra_body
        return _job(self._call(self._create_client.fine_tuning.jobs.create, **kwargs))

    def find_job(self, tuneline_job_id: str) -> RemoteJob | None:
        page = self._call(
            self._client.fine_tuning.jobs.list, metadata={"tuneline_job_id": tuneline_job_id}, limit=10
        )
        for raw in page.data:
            if (getattr(raw, "metadata", None) or {}).get("tuneline_job_id") == tuneline_job_id:
                return _job(raw)
        return None

    def list_jobs(self, after: str | None, limit: int) -> tuple[list[RemoteJob], bool]:
        """A page of the account's jobs, newest first, and whether more follow."""
        kwargs: dict[str, Any] = {"limit": limit}
        if after:
            kwargs["after"] = after
        page = self._call(self._client.fine_tuning.jobs.list, **kwargs)
        return [_job(raw) for raw in page.data], bool(getattr(page, "has_more", False))

    def get_job(self, job_id: str) -> RemoteJob:
        return _job(self._call(self._client.fine_tuning.jobs.retrieve, job_id))

    def list_events(self, job_id: str, limit: int = 100) -> list[RemoteEvent]:
        page = self._call(self._client.fine_tuning.jobs.list_events, job_id, limit=limit)
        out = []
        for e in page.data:
            data = getattr(e, "data", None)
            out.append(
                RemoteEvent(
                    id=e.id,
                    created_at=e.created_at,
                    level=e.level,
                    message=e.message,
                    type=getattr(e, "type", None) or "message",
                    data=dict(data) if isinstance(data, dict) else {},
                )
            )
        return out

    def list_checkpoints(self, job_id: str) -> list[RemoteCheckpoint]:
        page = self._call(self._client.fine_tuning.jobs.checkpoints.list, job_id, limit=100)
        out = []
        for c in page.data:
            metrics = c.metrics.model_dump(exclude_none=True) if c.metrics is not None else {}
            out.append(
                RemoteCheckpoint(
                    id=c.id,
                    created_at=c.created_at,
                    step_number=c.step_number,
                    fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
                    metrics=metrics,
                )
            )
        return out

    def cancel(self, job_id: str) -> RemoteJob:
        return _job(self._call(self._client.fine_tuning.jobs.cancel, job_id))

    def pause(self, job_id: str) -> RemoteJob:
        return _job(self._call(self._client.fine_tuning.jobs.pause, job_id))

    def resume(self, job_id: str) -> RemoteJob:
        return _job(self._call(self._client.fine_tuning.jobs.resume, job_id))

    def result_metrics(self, file_id: str) -> list[dict[str, Any]]:
        content = self._call(self._client.files.content, file_id)
        return parse_result_csv(content.content)

    # --- reading an account's history (imports, DESIGN §15): plain dicts in OpenAI's shapes ---

    def jobs_page(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of the account's fine-tuning jobs, newest first, after the job ``after``."""
        kwargs: dict[str, Any] = {"limit": limit}
        if after:
            kwargs["after"] = after
        page = self._call(self._client.fine_tuning.jobs.list, **kwargs)
        return [j.model_dump(mode="json") for j in page.data], bool(getattr(page, "has_more", False))

    def job(self, job_id: str) -> dict[str, Any]:
        raw = self._call(self._client.fine_tuning.jobs.retrieve, job_id)
        return dict(raw.model_dump(mode="json"))

    def all_events(self, job_id: str, page_size: int = 100) -> list[dict[str, Any]]:
        """Every event of a job, oldest first (the API pages them newest first)."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size, **({"after": after} if after else {})}
            page = self._call(self._client.fine_tuning.jobs.list_events, job_id, **kwargs)
            out.extend(e.model_dump(mode="json") for e in page.data)
            if not page.data or not getattr(page, "has_more", False):
                return out[::-1]
            after = page.data[-1].id

    def all_checkpoints(self, job_id: str, page_size: int = 100) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size, **({"after": after} if after else {})}
            page = self._call(self._client.fine_tuning.jobs.checkpoints.list, job_id, **kwargs)
            out.extend(c.model_dump(mode="json") for c in page.data)
            if not page.data or not getattr(page, "has_more", False):
                return out
            after = page.data[-1].id

    def file_name(self, file_id: str) -> str:
        return str(self._call(self._client.files.retrieve, file_id).filename or f"{file_id}.jsonl")

    def download(self, file_id: str, write: Callable[[bytes], object]) -> None:
        """Stream a file's bytes into ``write`` (never the whole file in memory)."""

        def stream() -> None:
            with self._client.files.with_streaming_response.content(file_id) as response:
                for chunk in response.iter_bytes(1 << 20):
                    write(chunk)

        self._call(stream)

    def complete(self, request: CompletionRequest) -> CompletionResult:
        """One chat or text completion; the same SDK calls work for OpenAI, Azure and the sandbox."""
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.stop:
            kwargs["stop"] = request.stop
        if request.messages is not None:
            chat = self._call(self._client.chat.completions.create, messages=request.messages, **kwargs)
            choice = chat.choices[0]
            text, finish, usage = choice.message.content or "", choice.finish_reason, chat.usage
        else:
            plain = self._call(self._client.completions.create, prompt=request.prompt or "", **kwargs)
            choice = plain.choices[0]
            text, finish, usage = choice.text or "", choice.finish_reason, plain.usage
        return CompletionResult(
            text=text,
            finish_reason=str(finish or "stop"),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )


@dataclass
class CreateJobRequest:
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    suffix: str | None
    seed: int | None
    metadata: dict[str, str]
    method: dict[str, Any] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    integrations: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's (wandb)


@state_type
@dataclass
class RemoteState(BackendState):
    """What Tuneline keeps about a job a remote provider trains (the provider's own job id and
    status are the job's public ``provider_job_id`` / ``provider_status``)."""

    kind: ClassVar[str] = "remote"
    LEGACY: ClassVar[dict[str, str]] = {
        "submit_started": "submit_started",
        "training_file": "provider_training_file",
        "validation_file": "provider_validation_file",
        "events_seen": "provider_events_seen",
        "poll_failures": "poll_failures",
        "result_files": "provider_result_files",
        "fine_tuned_model": "provider_fine_tuned_model",
        "last_polled_at": "last_polled_at",
    }

    submit_started: bool = False  # persisted before the paid create: the next attempt looks first
    training_file: str | None = None
    validation_file: str | None = None
    events_seen: list[str] = field(default_factory=list)
    poll_failures: int = 0
    result_files: list[str] = field(default_factory=list)
    fine_tuned_model: str | None = None
    last_polled_at: float | None = None
    detailed_at: float | None = None  # when its events and checkpoints were last read
    poll_due_at: float | None = None  # when its next sync was scheduled (the poll's fixed rate)


def remote_state(job: Job) -> RemoteState:
    state: RemoteState = state_of(job, RemoteState)
    return state


OPENAI_KNOBS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RemoteBackend(Backend):
    """A provider with OpenAI's fine-tuning API, reached through the official SDK."""

    state_type = RemoteState
    integrations = (WANDB,)  # OpenAI's W&B integration, forwarded as given

    def __init__(
        self, name: str, client: openai.OpenAI, account: str, store: Store, extensions: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.account = account
        self.extensions = extensions
        self.sdk = SDKClient(client)
        self.store = store

    def validate(
        self, model: str, hyperparameters: dict[str, Any], method: dict[str, Any] | None
    ) -> Validated:
        local.refuse_local_knobs(hyperparameters, method, self.name)
        try:
            resolve_model(model)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="model", code="model_not_found") from None
        return Validated({name: hyperparameters.get(name, "auto") for name in OPENAI_KNOBS})

    def estimate(self, report: dict[str, Any], model: str, n_epochs: int) -> dict[str, Any]:
        spec = resolve_model(model)
        per_epoch = int((report.get("tokens") or {}).get("billed_per_epoch") or 0)
        return {
            "n_epochs": n_epochs,
            "billed_tokens": per_epoch * n_epochs,
            "price_per_million": spec.price_per_million,
            "cost_usd": training_cost_usd(spec, per_epoch, n_epochs),
        }

    def after_prepare(self) -> Next:
        return Next(states.VALIDATING, "uploading", tasknames.JOB_UPLOAD)

    def _upload_once(self, path: Path, filename: str) -> str:
        """Upload unless the same bytes were already uploaded to this provider account."""
        sha = _sha256(path)
        known = repo.provider_file_for(self.store, self.account, sha)
        if known and self.sdk.file_exists(known):
            return known
        file_id = self.sdk.upload_file(path, filename)
        repo.remember_provider_file(self.store, self.account, sha, file_id)
        return file_id

    def upload(self, job: Job) -> tuple[str, str | None]:
        prepared = job.prepared or {}
        training = self._upload_once(Path(prepared["train"]), f"{job.id}-train.jsonl")
        validation = None
        if prepared.get("validation"):
            validation = self._upload_once(Path(prepared["validation"]), f"{job.id}-valid.jsonl")
        return training, validation

    def find(self, job: Job) -> RemoteJob | None:
        return self.sdk.find_job(job.id)

    def create(self, job: Job) -> RemoteJob:
        state = remote_state(job)
        if state.training_file is None:
            raise BackendError("the job has no uploaded training file", kind="permanent", code="not_uploaded")
        return self.sdk.create_job(
            CreateJobRequest(
                model=job.model,
                training_file=state.training_file,
                validation_file=state.validation_file,
                hyperparameters={k: v for k, v in job.hyperparameters.items() if v != "auto"},
                suffix=job.suffix,
                seed=job.seed,
                metadata={**(job.metadata or {}), "tuneline_job_id": job.id},
                method=job.method,
                extra_body={k: v for k, v in job.extensions.items() if k in self.extensions and v},
                integrations=list(job.integrations),
            )
        )

    sync_calls = 3  # the job, its events, its checkpoints

    def sync(self, job: Job) -> Progress:
        assert job.provider_job_id is not None
        remote = self.sdk.get_job(job.provider_job_id)
        events = self.sdk.list_events(job.provider_job_id, limit=100)
        checkpoints = self.sdk.list_checkpoints(job.provider_job_id)
        return Progress(remote, events, checkpoints)

    def sync_many(
        self, jobs: list[Job], budget: Budget, wants_detail: WantsDetail
    ) -> dict[str, Progress | BackendError]:
        """The account's job list read once for all ``jobs``; events and checkpoints (one call
        each) only for the jobs ``wants_detail`` picks."""
        wanted = {j.provider_job_id: j for j in jobs if j.provider_job_id}
        out: dict[str, Progress | BackendError] = {}
        detailed: list[tuple[Job, RemoteJob, bool]] = []
        for remote in self._listed(wanted, budget):
            job = wanted[remote.id]
            if not wants_detail(job, remote):
                out[job.id] = Progress(remote, [], [], detailed=False)
                continue
            # Checkpoints come from training: none while the job waits to start.
            waiting = remote.status in ("validating_files", "queued")
            if not budget(1 if waiting else 2):
                break  # the rest get their own polls, which wait for the budget
            detailed.append((job, remote, waiting))

        def detail(item: tuple[Job, RemoteJob, bool]) -> Progress | BackendError:
            _job, remote, waiting = item
            try:
                events = self.sdk.list_events(remote.id, limit=100)
                checkpoints = [] if waiting else self.sdk.list_checkpoints(remote.id)
            except BackendError as exc:
                return exc
            return Progress(remote, events, checkpoints)

        # The calls were paid for above (the account's budget); they wait on the provider, so
        # several go at once (the SDK client is thread-safe).
        with ThreadPoolExecutor(min(DETAIL_THREADS, len(detailed) or 1), "tuneline-detail") as pool:
            for (job, _remote, _waiting), result in zip(detailed, pool.map(detail, detailed), strict=True):
                out[job.id] = result
        return out

    def _listed(self, wanted: dict[str, Job], budget: Budget) -> list[RemoteJob]:
        """The wanted jobs as the account's list shows them, reading pages (newest first) until
        every one was seen or the pages reach back past the oldest of them."""
        if not wanted:
            return []
        oldest = min(j.created_at for j in wanted.values()) - LIST_CLOCK_SLACK_S
        missing, found = set(wanted), []
        after = None
        while missing and budget(1):
            try:
                page, more = self.sdk.list_jobs(after, LIST_PAGE)
            except BackendError:
                break  # a broken list leaves the jobs not yet seen to their own polls
            found += [r for r in page if r.id in missing]
            missing -= {r.id for r in page}
            if not more or not page or (page[-1].created_at or 0) < oldest:
                break
            after = page[-1].id
        return found

    def cancel(self, job: Job) -> str | None:
        target = job.provider_job_id
        if target is None and remote_state(job).submit_started:
            found = self.sdk.find_job(job.id)  # a create may have landed before the cancel
            target = found.id if found else None
        if target:
            self.sdk.cancel(target)
        return target

    def pause(self, job: Job) -> tuple[str, str]:
        """Forwarded: the provider pauses the job; the poll keeps syncing it while it is paused."""
        self._control(job, "pause")
        return states.PROVIDER_PAUSED_STATE

    def resume(self, job: Job) -> tuple[str, str]:
        remote = self._control(job, "resume")
        return (
            (states.QUEUED, "provider_queued") if remote.status == "queued" else (states.RUNNING, "training")
        )

    def _control(self, job: Job, what: str) -> RemoteJob:
        if job.provider_job_id is None:
            raise NotSupported(self.name, what, job)
        call = self.sdk.pause if what == "pause" else self.sdk.resume
        try:
            return call(job.provider_job_id)
        except BackendError as exc:
            raise control_error(exc, what, job.id) from exc

    def finalize(self, job: Job) -> Finalized:
        return Finalized([self.sdk.result_metrics(f) for f in remote_state(job).result_files])

    def complete(self, job: Job, request: CompletionRequest, base: bool = False) -> CompletionResult:
        if base:
            raise Unprocessable(
                f"The base model of a {job.provider} job cannot be served by Tuneline.",
                param="model",
                code="base_model_not_served",
            )
        model = remote_state(job).fine_tuned_model or request.model
        return self.sdk.complete(replace(request, model=model))
