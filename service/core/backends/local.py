"""The local backend: Tuneline's own trainer, a child process per job on this host's device.

This module knows what a local job may ask for, its typed state, and how to read, serve and
delete what a run leaves; the run itself (lease, child process, progress) is ``local_run``.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from service.core import tasknames
from service.core.backends.base import (
    Backend,
    BackendError,
    CompletionRequest,
    CompletionResult,
    ExportRequest,
    ExportState,
    Finalized,
    Next,
    NotSupported,
    ScoreRequest,
    ScoreResult,
    Validated,
)
from service.core.datasets.models import DEFAULT_MODEL
from service.core.dispatch import Dispatcher
from service.core.errors import InvalidRequest, Unprocessable
from service.core.jobs import lifecycle, states
from service.core.jobs.integrations import MLFLOW, WANDB
from service.core.jobs.metrics import columns_for
from service.core.jobs.record import BackendState, Job, state_of, state_type
from service.core.store import Store, train_queue
from service.settings import Settings

log = logging.getLogger("tuneline.local")
ALIASES = ("smollm2-135m",)  # resolved by the training engine (service.training)
# Knobs only the local trainer understands; OpenAI-style providers refuse them at create.
LOCAL_KNOBS = (
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "max_seq_length",
    "learning_rate",
    "checkpoint_every",
    "training_type",
)
LORA_KNOBS = ("lora_rank", "lora_alpha", "lora_dropout")
OPENAI_KNOBS = ("n_epochs", "batch_size", "learning_rate_multiplier")
DPO_KNOBS = ("beta",)
# Reinforcement knobs only the local trainer has (beta is GRPO's KL coefficient there; OpenAI's
# reinforcement has no beta).
RL_LOCAL_KNOBS = ("beta", "max_completion_length")
SUPERVISED, DPO, REINFORCEMENT = "supervised", "dpo", "reinforcement"
METHODS = (SUPERVISED, DPO, REINFORCEMENT)  # OpenAI's method.type values the local trainer runs
# Preparation only checks format here (chat conversion, duplicates, splits): the trainer checks
# each example against the base model's own tokenizer and context and reports example_too_long.
PREPARE_MODEL = DEFAULT_MODEL

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def check_base_model(model: str, roots: tuple[Path, ...]) -> None:
    """A Hugging Face id (``org/name``), a directory under one of ``roots``, or a known alias.

    Local directories are confined to configured roots so that a tenant cannot make the trainer
    open arbitrary paths on the server (TUNELINE_LOCAL_MODEL_ROOTS; default ``<data_dir>/models``).
    """
    if model in ALIASES:
        return
    if model.startswith("ft:"):
        return  # the caller's own fine-tuned model: LocalBackend.continue_from checks it
    if ":" in model:
        raise InvalidRequest(
            "A local base model may not contain ':' (it is part of the fine_tuned_model id).",
            param="model",
            code="invalid_model",
        )
    if model.startswith("/"):
        if "/../" in model + "/" or "\x00" in model:
            raise InvalidRequest("A local model directory must be a plain absolute path.", param="model")
        resolved = Path(model).resolve()
        if not any(resolved == root or root in resolved.parents for root in roots):
            raise Unprocessable(
                f"model {model!r} is outside the directories local models may be loaded from "
                f"({', '.join(str(r) for r in roots)}); set TUNELINE_LOCAL_MODEL_ROOTS to allow it.",
                param="model",
                code="model_path_not_allowed",
            )
        return
    if not _HF_ID.match(model) or ".." in model:
        raise InvalidRequest(
            f"model {model!r} is neither a Hugging Face id (org/name), an absolute directory, "
            f"nor one of the aliases {', '.join(ALIASES)}.",
            param="model",
            code="invalid_model",
        )


def method_type(method: dict[str, Any] | None) -> str:
    """OpenAI's ``method.type``; a job without ``method`` is supervised."""
    return str((method or {}).get("type") or SUPERVISED)


def _method_hyper(method: dict[str, Any] | None) -> dict[str, Any]:
    kind = method_type(method)
    if kind not in METHODS:
        raise Unprocessable(
            f"The local provider supports method.type {' or '.join(map(repr, METHODS))}, not {kind!r}.",
            param="method.type",
            code="unsupported_method",
        )
    return dict((((method or {}).get(kind) or {}).get("hyperparameters")) or {})


def _given(hyper: dict[str, Any], name: str) -> bool:
    return name in hyper and hyper[name] != "auto"


def refuse_local_knobs(hyper: dict[str, Any], method: dict[str, Any] | None, provider: str) -> None:
    """Another provider would reject (or silently ignore) the local trainer's knobs: say so now."""
    nested = {kind: ((method or {}).get(kind) or {}).get("hyperparameters") or {} for kind in METHODS}
    for kind, values in (("", hyper), *nested.items()):
        _refuse_present(
            values,
            LOCAL_KNOBS + (RL_LOCAL_KNOBS if kind == REINFORCEMENT else ()),
            f"method.{kind}.hyperparameters" if kind else "hyperparameters",
            f"is a local-trainer setting; provider {provider!r} does not accept it.",
            "unsupported_hyperparameter",
        )


def _refuse_present(values: dict[str, Any], names: tuple[str, ...], prefix: str, why: str, code: str) -> None:
    for name in names:
        if name in values:
            raise InvalidRequest(f"{name} {why}", param=f"{prefix}.{name}", code=code)


def effective_hyperparameters(hyper: dict[str, Any], method: dict[str, Any] | None) -> dict[str, Any]:
    """The job's hyperparameters for the local trainer: top level, then ``method.<type>``'s.

    Raises a 4xx naming the field for combinations that cannot work together.
    """
    kind = method_type(method)
    nested = _method_hyper(method)
    merged: dict[str, Any] = {name: "auto" for name in OPENAI_KNOBS}
    merged.update(hyper)
    merged.update(nested)
    param = f"method.{kind}.hyperparameters" if nested else "hyperparameters"
    if kind not in (DPO, REINFORCEMENT):
        where = f"method.{kind}.hyperparameters" if "beta" in nested else "hyperparameters"
        _refuse_present(
            merged,
            DPO_KNOBS,
            where,
            f"applies to methods 'dpo' and 'reinforcement' only; method.type is {kind!r}.",
            "conflicting_hyperparameters",
        )
    if kind == REINFORCEMENT and merged.get("reasoning_effort", "default") != "default":
        raise Unprocessable(
            "reasoning_effort is an OpenAI reasoning-model setting; the local trainer's open models "
            "have none (leave it out, or 'default').",
            param=f"{param}.reasoning_effort",
            code="unsupported_hyperparameter",
        )
    if _given(merged, "learning_rate") and _given(merged, "learning_rate_multiplier"):
        raise InvalidRequest(
            "Give learning_rate or learning_rate_multiplier, not both.",
            param=f"{param}.learning_rate",
            code="conflicting_hyperparameters",
        )
    if merged.get("training_type") == "full":
        _refuse_present(
            merged,
            LORA_KNOBS,
            param,
            "applies to LoRA training; training_type is 'full'.",
            "conflicting_hyperparameters",
        )
    return merged


PROCESS, RAY = "process", "ray"  # the executors (settings.TRAIN_EXECUTORS): local_run runs each


@dataclass(frozen=True)
class Compute:
    """How a local job trains (the ``compute`` extension): a child process on the train worker's
    device, or ``num_workers`` data-parallel workers on a Ray cluster (docs/ray.md)."""

    executor: str = PROCESS
    num_workers: int = 1
    gpus_per_worker: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        if self.executor == PROCESS:
            return {"executor": PROCESS, "num_workers": 1}
        return {
            "executor": self.executor,
            "num_workers": self.num_workers,
            "gpus_per_worker": self.gpus_per_worker,
        }


def resolve_compute(requested: dict[str, Any] | None, default_executor: str) -> Compute:
    """The job's ``compute`` (already well-formed by the API's schema), with the deployment's
    default executor; a 4xx naming the field for what the chosen executor cannot do."""
    requested = requested or {}
    executor = str(requested.get("executor") or default_executor)
    if executor not in (PROCESS, RAY):
        raise InvalidRequest(
            f"compute.executor must be {PROCESS!r} or {RAY!r}, not {executor!r}.",
            param="compute.executor",
            code="invalid_executor",
        )
    workers = requested.get("num_workers", 1)
    gpus = requested.get("gpus_per_worker", 0)
    if executor == PROCESS:
        chosen = "" if requested.get("executor") else " (the default, TUNELINE_TRAIN_EXECUTOR)"
        if workers != 1:
            raise Unprocessable(
                f"The process executor{chosen} trains in one process; num_workers {workers} needs "
                f"compute.executor 'ray'.",
                param="compute.num_workers",
                code="compute_not_supported",
            )
        if gpus:
            raise Unprocessable(
                f"The process executor{chosen} trains on its worker's device (TUNELINE_TRAIN_DEVICE); "
                "gpus_per_worker applies to compute.executor 'ray'.",
                param="compute.gpus_per_worker",
                code="compute_not_supported",
            )
        return Compute()
    return Compute(RAY, int(workers), float(gpus))


def compute_of(job: Job) -> Compute:
    """The job's compute; records from before the extension trained in a process."""
    raw = job.compute or {}
    return Compute(
        str(raw.get("executor") or PROCESS),
        int(raw.get("num_workers") or 1),
        float(raw.get("gpus_per_worker") or 0.0),
    )


def check_reward_grader(settings: Settings, reinforcement: dict[str, Any]) -> None:
    """The grader must run inside the trainer: python graders when the operator enabled them; no
    model graders (a judge answers through the service's completions, which a run does not call)."""
    from service.core.graders.usecases import REWARD_ROOT, reward_grader

    if "grader" not in reinforcement:
        raise InvalidRequest(
            f"Missing required parameter: '{REWARD_ROOT}'.",
            param=REWARD_ROOT,
            code="missing_required_parameter",
        )
    reward_grader(settings, reinforcement["grader"])


def python_grader_limits(settings: Settings) -> dict[str, float] | None:
    """What the training child runs python graders with; None when they are switched off."""
    if not settings.python_grader_enabled:
        return None
    return {"timeout_s": settings.python_grader_timeout_s, "memory_mb": settings.python_grader_memory_mb}


@state_type
@dataclass
class LocalState(BackendState):
    """What Tuneline keeps about a job its own trainer runs."""

    kind: ClassVar[str] = "local"
    LEGACY: ClassVar[dict[str, str]] = {
        "child": "local_child",
        "model_dir": "local_model_dir",
        "result_files": "provider_result_files",
        "runtime_s": "train_runtime_s",
    }

    child: dict[str, Any] | None = None  # the running training process: pid and device
    # A job whose model is one of the tenant's ``ft:`` models continues that model's directory;
    # base_model is then the original base the run loads it onto (set by continue_from).
    from_model: str | None = None
    base_model: str | None = None
    model_dir: str | None = None
    result_files: list[str] | None = None  # paths relative to the data directory
    runtime_s: float | None = None
    paused_step: int | None = None  # the checkpoint step of the last pause: the next run resumes
    ray: dict[str, Any] | None = None  # executor ray: its current attempt (ray_executor.RayAttempt)


def local_state(job: Job) -> LocalState:
    state: LocalState = state_of(job, LocalState)
    return state


def base_model_of(job: Job) -> str:
    """The base model the job's run loads: its own ``model``, or the original base of an ``ft:`` one."""
    return local_state(job).base_model or job.model


def starting_model_of(job: Job) -> str:
    """The model the job trained from, served as its evaluation baseline (named ``job.model``): the
    base, or for a job on an ``ft:`` model (SFT, then DPO) that model's directory, not its base."""
    return local_state(job).from_model or base_model_of(job)


class LocalBackend(Backend):
    """Trains on this deployment's own device; serves and deletes the models it trained."""

    state_type = LocalState
    integrations = (WANDB, MLFLOW)  # the engine logs to them (service.training.tracking)

    def __init__(self, name: str, settings: Settings, store: Store, dispatcher: Dispatcher | None) -> None:
        self.name = name
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.data_dir = settings.data_dir.resolve()
        self.account = f"local:{self.data_dir}"
        self.device_id = device_id(settings)

    def validate(
        self, model: str, hyperparameters: dict[str, Any], method: dict[str, Any] | None
    ) -> Validated:
        check_base_model(model, self.settings.model_roots)
        merged = effective_hyperparameters(hyperparameters, method)
        if method_type(method) == REINFORCEMENT:
            check_reward_grader(self.settings, (method or {}).get(REINFORCEMENT) or {})
        return Validated(merged)

    def validate_compute(self, compute: dict[str, Any] | None) -> dict[str, Any] | None:
        return resolve_compute(compute, self.settings.train_executor).to_dict()

    def continue_from(self, job: Job, source: Job) -> None:
        """A job on the tenant's ``ft:`` model trains on from the model directory that job left.

        Only models this deployment trained itself have one; another provider's model cannot be
        loaded here.
        """
        model_dir = local_state(source).model_dir if source.provider == self.name else None
        if not model_dir:
            raise Unprocessable(
                f"The local provider can continue only fine-tuned models it trained itself; "
                f"{job.model} was trained by provider {source.provider!r}.",
                param="model",
                code="model_not_supported",
            )
        state = local_state(job)
        state.from_model = model_dir
        state.base_model = base_model_of(source)

    def estimate(self, report: dict[str, Any], model: str, n_epochs: int) -> dict[str, Any]:
        """Training on your own hardware bills no tokens."""
        return {"n_epochs": n_epochs, "billed_tokens": 0, "price_per_million": 0.0, "cost_usd": 0.0}

    def preparation_model(self, job: Job) -> str:
        return PREPARE_MODEL

    def after_prepare(self) -> Next:
        # No upload or submit: the job waits in the train queue for a device.
        return Next(states.QUEUED, "train_queued", tasknames.TRAIN_RUN)

    def start(self, job: Job) -> str | None:
        """Put the job in the train wait queue; the train task it returns only wakes a trainer.

        Idempotent: a job already queued or training is left as it is (None: no wake-up). The
        watchdog calls it for a ``train_queued`` record from before the queue, which joins it here.
        """
        if not train_queue.push(self.store, job.id, job.tenant, job.priority):
            return None
        place = train_queue.position(self.store, job.id)
        lifecycle.record_event(
            self.store,
            job.id,
            f"Waiting for a training device: position {place}",
            data={"position": place, "priority": job.priority},
        )
        return tasknames.TRAIN_RUN

    def cancel(self, job: Job) -> str | None:
        """A cancelled job leaves the train queue (a training one is stopped by its supervisor).

        A Ray run is stopped here too: its follower stops it within a second, but a run whose
        follower died keeps training on the cluster until someone does.
        """
        train_queue.release(self.store, job.id)
        if compute_of(job).executor == RAY:
            from service.core.backends import ray_executor  # here: it imports this module

            ray_executor.stop_run(self.settings, self.store, job)
        return None

    def pause(self, job: Job) -> tuple[str, str]:
        """The job goes to ``pausing``; its run's supervisor sees that and asks the child to pause
        (``local_run``), which then saves a checkpoint, frees the device and marks it ``paused``."""
        if (job.status, job.stage) != (states.RUNNING, "training"):
            raise NotSupported(self.name, "pause (only a training job can be paused)", job)
        return states.PAUSING_STATE

    def resume(self, job: Job) -> tuple[str, str]:
        """Back to the train queue; the next run resumes from the pause's checkpoint."""
        if (job.status, job.stage) != states.PAUSED_STATE:
            raise NotSupported(self.name, "resume (it is still saving its pause checkpoint)", job)
        return self.after_prepare().status, self.after_prepare().stage

    def finalize(self, job: Job) -> Finalized:
        columns = columns_for(job.method)
        return Finalized(
            [self._result_metrics(path, columns) for path in local_state(job).result_files or []]
        )

    def _result_metrics(self, file_id: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        path = (self.data_dir / file_id).resolve()
        if not path.is_relative_to(self.data_dir):
            raise BackendError(
                f"result file {file_id} is outside the data directory",
                kind="permanent",
                code="result_missing",
            )
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return [_metric_row(record, columns) for record in csv.DictReader(fh)]
        except FileNotFoundError:
            raise BackendError(
                f"the training run left no result file at {file_id}", kind="permanent", code="result_missing"
            ) from None

    def serves_base(self, job: Job) -> bool:
        return True

    def complete(self, job: Job, request: CompletionRequest, base: bool = False) -> CompletionResult:
        from service.core.inference import request_completion

        if self.dispatcher is None:
            raise RuntimeError(
                "the local backend was built without a dispatcher; it cannot serve completions"
            )
        # The starting model is served by the same engine: its id (or directory) in place of the adapter's.
        model_dir = starting_model_of(job) if base else self._served_dir(job, request)
        return request_completion(
            self.store, self.dispatcher, job, model_dir, request, self.settings.infer_timeout_s
        )

    def scores_replies(self, job: Job) -> bool:
        return True

    def score(self, job: Job, request: ScoreRequest, base: bool = False) -> ScoreResult:
        from service.core.inference import request_scores

        if self.dispatcher is None:
            raise RuntimeError("the local backend was built without a dispatcher; it cannot score replies")
        model_dir = starting_model_of(job) if base else local_state(job).model_dir
        return request_scores(
            self.store, self.dispatcher, job, model_dir, request, self.settings.infer_timeout_s
        )

    def stream(self, job: Job, request: CompletionRequest) -> Iterator[str | CompletionResult]:
        """Tokens as the infer worker generates them (pushed one message each through Redis)."""
        from service.core.inference import stream_completion

        if self.dispatcher is None:
            raise RuntimeError(
                "the local backend was built without a dispatcher; it cannot serve completions"
            )
        return stream_completion(
            self.store,
            self.dispatcher,
            job,
            self._served_dir(job, request),
            request,
            self.settings.infer_timeout_s,
        )

    def _served_dir(self, job: Job, request: CompletionRequest) -> str | None:
        """The final model, or the checkpoint the request names (``ft:...:ckpt-step-N``)."""
        from service.core.backends.local_export import source_dir

        found = source_dir(self.settings, job, local_state(job).model_dir, request.step)
        return None if found is None else str(found)

    def export(self, job: Job, request: ExportRequest) -> ExportState:
        from service.core.backends import local_export

        if job.status != states.SUCCEEDED or not local_state(job).model_dir:
            raise Unprocessable(
                f"Model {request.model} is not ready: its job {job.id} is {job.status}.",
                param="model",
                code="model_not_ready",
            )
        return local_export.start(self.settings, self.store, self.dispatcher, job, request)

    def delete_model(self, job: Job) -> bool:
        """Delete the model directory (only ever inside the data directory) and its exports."""
        from service.core.backends import local_export

        removed = local_export.delete(self.settings, job.id)
        raw = local_state(job).model_dir
        if not raw:
            return removed
        path = Path(raw).resolve()
        if self.data_dir not in path.parents or not path.exists():
            return removed
        shutil.rmtree(path, ignore_errors=True)
        return True


def device_id(settings: Settings) -> str:
    """Names the device this host's trainer uses, e.g. ``<host>:cuda:0`` (one lock per device)."""
    return f"{socket.gethostname()}:{settings.train_device}"


def _metric_row(record: dict[str, str], columns: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in columns:
        raw = (record.get(name) or "").strip()
        row[name] = None if raw == "" else (int(float(raw)) if name == "step" else float(raw))
    return row
