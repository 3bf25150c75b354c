"""The backend interface, the classified errors backends raise, and the data they exchange.

A stage (``service.core.jobs.stages``) never asks which provider a job has: it asks the job's
backend. A backend says what follows preparation (``after_prepare``), and implements the calls
of the stages it takes part in; what it does not support raises ``NotSupported`` (409).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from service.core.errors import Conflict, Unprocessable
from service.core.jobs.record import BackendState, Job

ErrorKind = Literal["transient", "ambiguous", "permanent"]


class BackendError(Exception):
    """A backend call failed, classified for the retry policy (``service.core.jobs.retry``).

    ``transient``: nothing happened, try again (after ``retry_after`` when the provider said so).
    ``ambiguous``: the request may have reached the provider (a timeout, a 5xx on a create).
    ``permanent``: retrying cannot help; ``code`` is the stable code the job fails with.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        code: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.code = code
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind != "permanent"

    @property
    def ambiguous(self) -> bool:
        return self.kind == "ambiguous"


class NotSupported(Conflict):
    """409 ``conflict_error``: this backend cannot do that to a job (yet)."""

    code = "not_supported"

    def __init__(self, backend: str, what: str, job: Job) -> None:
        super().__init__(
            f"The {backend} backend cannot {what} job {job.id} (status {job.status}).",
            headers={"x-should-retry": "false"},
        )


# --- what backends exchange with the stages ----------------------------------------------------


@dataclass
class RemoteJob:
    """A job as a remote provider reports it."""

    id: str
    status: str
    model: str = ""
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    estimated_finish: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: int | None = None  # the provider's clock; bounds how far back a list is read


@dataclass
class RemoteEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RemoteCheckpoint:
    id: str
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    """One sync: the provider's view of the job, and the events and checkpoints it has now.

    ``detailed`` is False when only the job was read (its events and checkpoints were not asked
    for: nothing suggested they changed); the lists are then empty, not "none yet".
    """

    job: RemoteJob
    events: list[RemoteEvent]
    checkpoints: list[RemoteCheckpoint]
    detailed: bool = True


# Takes ``n`` provider calls from the account's rate budget: False when it is spent for now.
Budget = Callable[[int], bool]
# Whether a job whose provider state was just listed needs its events and checkpoints read.
WantsDetail = Callable[[Job, RemoteJob], bool]


@dataclass
class CompletionRequest:
    """One inference call: chat ``messages`` or a text ``prompt`` (exactly one is set)."""

    model: str
    messages: list[dict[str, Any]] | None
    prompt: str | None
    max_tokens: int = 256
    temperature: float = 0.0
    stop: list[str] | None = None
    step: int | None = None  # a checkpoint of the model (``ft:...:ckpt-step-N``); None: the final one


@dataclass
class CompletionResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ScoreRequest:
    """Log-probabilities of given replies after a chat prompt (held-out preference evaluation).

    Each reply is in OpenAI's output shape: a list of exactly one assistant message.
    """

    messages: list[dict[str, Any]]
    replies: list[list[dict[str, Any]]]


@dataclass
class ScoreResult:
    logprobs: list[float]  # per reply: the summed log-probability of its tokens, in nats
    tokens: list[int]  # per reply: how many tokens it has (with its end-of-turn token)


@dataclass(frozen=True)
class ExportRequest:
    """One export of a job's model: ``step`` names a checkpoint (None: the final model)."""

    model: str  # the name asked for (``ft:...`` or ``ft:...:ckpt-step-N``)
    format: str  # adapter | merged | gguf
    quantization: str  # gguf only: f16 | q8_0
    step: int | None = None


@dataclass(frozen=True)
class ExportState:
    """Where an export stands: ``file`` set once it is built (the one file to send back)."""

    status: str  # building | ready
    file: Path | None = None
    filename: str = ""


@dataclass
class Validated:
    """A create request's backend-specific part, checked: the job's hyperparameters."""

    hyperparameters: dict[str, Any]


@dataclass(frozen=True)
class Next:
    """Where a job goes after preparation: its (status, stage) and the task that serves it."""

    status: str
    stage: str
    task: str


@dataclass
class Trained:
    """How a training run ended: ``error`` set when it failed; ``apply`` records its outputs."""

    message: str
    error: dict[str, str] | None = None
    trained_tokens: int | None = None
    apply: Callable[[Job], None] | None = None


@dataclass
class Finalized:
    """A trained job's result metrics (rows by step), one per result file."""

    metrics: list[list[dict[str, Any]]]


class Backend:
    """The interface every backend implements (DESIGN §11); defaults refuse with NotSupported.

    ``name``: the provider name jobs carry. ``state_type``: the typed state it keeps on a job.
    ``extensions``: request fields it forwards to its provider (e.g. ``sandbox``).
    ``account``: identifies the provider account (file reuse, poll rate limits).
    ``integrations``: the ``integrations[].type`` values it honours (others are refused at create).
    """

    name: str = ""
    state_type: ClassVar[type[BackendState]] = BackendState
    extensions: tuple[str, ...] = ()
    integrations: tuple[str, ...] = ()
    account: str = ""

    # --- at create (the API process) -------------------------------------------------------
    def validate(
        self, model: str, hyperparameters: dict[str, Any], method: dict[str, Any] | None
    ) -> Validated:
        """Check the base model, method and knobs; return the job's normalised hyperparameters."""
        raise NotImplementedError

    def validate_compute(self, compute: dict[str, Any] | None) -> dict[str, Any] | None:
        """Check the job's ``compute`` extension (how its training runs); the one it keeps.

        A backend whose provider runs the training somewhere Tuneline does not choose refuses
        any ``compute`` (422 naming it), rather than accept a request it cannot honour.
        """
        if compute is not None:
            raise Unprocessable(
                f"compute applies to training Tuneline runs itself (the local provider); provider "
                f"{self.name!r} runs its jobs on its own hardware.",
                param="compute",
                code="compute_not_supported",
            )
        return None

    def continue_from(self, job: Job, source: Job) -> None:
        """``job``'s model is the caller's fine-tuned model trained by ``source``: prepare to train on.

        Remote providers take the ``ft:`` name as the model as it is; a backend that must load the
        model itself records where it is, or refuses with a 4xx naming ``model``.
        """

    def estimate(self, report: dict[str, Any], model: str, n_epochs: int) -> dict[str, Any]:
        """Cost (and billed tokens) of training ``model`` on a prepared file for ``n_epochs``."""
        raise NotImplementedError

    # --- preparation and what follows ------------------------------------------------------
    def preparation_model(self, job: Job) -> str:
        """The model whose limits and tokenizer preparation checks the data against."""
        return job.model

    def after_prepare(self) -> Next:
        raise NotImplementedError

    # --- remote stages: upload, submit (look before create), poll --------------------------
    def upload(self, job: Job) -> tuple[str, str | None]:
        """Upload the prepared train (and validation) file; their provider file ids."""
        raise NotSupported(self.name, "upload files for", job)

    def find(self, job: Job) -> RemoteJob | None:
        """The provider job an earlier create made for ``job``, if any (look before create)."""
        raise NotSupported(self.name, "look up a provider job for", job)

    def create(self, job: Job) -> RemoteJob:
        raise NotSupported(self.name, "create a provider job for", job)

    def sync(self, job: Job) -> Progress:
        raise NotSupported(self.name, "sync", job)

    # Provider calls one ``sync`` makes; each takes one from the account's rate budget.
    sync_calls: int = 1

    def sync_many(
        self, jobs: list[Job], budget: Budget, wants_detail: WantsDetail
    ) -> dict[str, Progress | BackendError]:
        """Sync many jobs of this backend's account together: by Tuneline job id, each one's
        progress (or the error of its own calls). ``budget`` is taken before every provider call.

        A job left out of the answer gets its own ``sync`` (the stage's per-job poll): one the
        provider's list did not show, or all of them when the budget ran out or the list failed.
        The default lists nothing, so a backend without an account-wide list polls job by job.
        """
        return {}

    # --- train stage (an executor Tuneline runs) -------------------------------------------
    def start(self, job: Job) -> str | None:
        """Hand a job that reached ``after_prepare().stage`` to its executor; the task to enqueue.

        The watchdog calls it once more for a job it finds in that stage: it must be idempotent.
        """
        return self.after_prepare().task

    def train(self, job: Job) -> Trained | None:
        """Run the job's training where Tuneline executes it (the ``train`` stage).

        None when this run did not finish the job (cancelled, lease lost, or left to a resume).
        """
        raise NotSupported(self.name, "train", job)

    def wake(self, job: Job) -> bool:
        """The watchdog found the job in its stage for too long: True to enqueue its task again.

        Stage tasks are safe to run twice, so the default is yes; a backend says no for a stage
        where a second run would cost more than the wait (none does today).
        """
        return True

    # --- every backend ---------------------------------------------------------------------
    def cancel(self, job: Job) -> str | None:
        """Stop the job's work at the provider (it is already ``cancelled`` in Tuneline).

        Returns the provider job id it cancelled, if any.
        """
        return None

    def pause(self, job: Job) -> tuple[str, str]:
        """Ask the executor to pause a running job; the (status, stage) the job moves to now."""
        raise NotSupported(self.name, "pause", job)

    def resume(self, job: Job) -> tuple[str, str]:
        """Let a paused job go on; the (status, stage) it moves to (its stage task is enqueued)."""
        raise NotSupported(self.name, "resume", job)

    def finalize(self, job: Job) -> Finalized:
        raise NotImplementedError

    def serves_base(self, job: Job) -> bool:
        """Whether the model the job started from (its untuned base, or the ``ft:`` model it
        continued) can be served as an evaluation baseline (``complete(base=True)``)."""
        return False

    def complete(self, job: Job, request: CompletionRequest, base: bool = False) -> CompletionResult:
        raise NotSupported(self.name, "serve completions for", job)

    def scores_replies(self, job: Job) -> bool:
        """Whether ``score`` can read log-probabilities of given replies from the job's models."""
        return False

    def score(self, job: Job, request: ScoreRequest, base: bool = False) -> ScoreResult:
        """Log-probabilities of ``request.replies`` under the job's model (``base``: the model the
        job started from). Providers whose API only returns log-probabilities of what they
        generate themselves (OpenAI's) cannot."""
        raise NotSupported(self.name, "score replies for", job)

    def stream(self, job: Job, request: CompletionRequest) -> Iterator[str | CompletionResult]:
        """The answer as text pieces while it is generated, then its ``CompletionResult``.

        By default the finished answer, in one piece: a backend that can send tokens as they come
        (the local one) overrides this.
        """
        result = self.complete(job, request)
        yield result.text
        yield result

    def export(self, job: Job, request: ExportRequest) -> ExportState:
        """The built export, or start building it once (in the background) and say so."""
        raise NotSupported(self.name, "export the model of", job)

    def delete_model(self, job: Job) -> bool:
        """Remove the model's files where Tuneline holds them; True when something was removed."""
        return False
