"""The typed job record and its one owner: every write of a job goes through this module.

A job is stored as one JSON document: the common fields at the top level (the public view reads
them there), and the state its backend keeps about it under ``backend_state`` (a typed part,
tagged with its ``kind``). Records written before the typed record existed kept everything flat
(``provider_job_id``, ``submit_started``, ``local_child``, ...); they still load: the backend's
state type picks its fields out of the flat document.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from service.core.jobs.seeds import DEFAULT_SEED
from service.core.store import Store
from service.core.store import jobs as repo
from service.core.store.base import Pipeline


@dataclass
class BackendState:
    """What one backend keeps about a job; each backend subclasses it with its own fields.

    ``kind`` tags the stored document; ``LEGACY`` maps a field to its key in the flat records
    written before the typed record (only the two backends that existed then have any).
    """

    kind: ClassVar[str] = "none"
    LEGACY: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BackendState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def from_legacy(cls, flat: dict[str, Any]) -> BackendState:
        return cls.from_dict(
            {name: flat[key] for name, key in cls.LEGACY.items() if flat.get(key) is not None}
        )


@dataclass
class UnknownState(BackendState):
    """A state of a kind this process does not know (a backend it lacks): kept as stored."""

    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


_STATE_TYPES: dict[str, type[BackendState]] = {"none": BackendState}
# provider name -> state kind, filled by the backend registry: only it knows provider names.
_LEGACY_KINDS: dict[str, str] = {}
# Request extension fields a backend forwards to its provider, stored on the job as they came.
_EXTENSIONS: set[str] = set()

S = TypeVar("S", bound=type[BackendState])


def state_type(cls: S) -> S:
    """Register a backend's state type (a class decorator) so stored records of it load."""
    _STATE_TYPES[cls.kind] = cls
    return cls


def register_legacy_kind(provider: str, kind: str) -> None:
    """The state kind of flat (pre-typed) records of ``provider``."""
    _LEGACY_KINDS[provider] = kind


def register_extension(name: str) -> None:
    """A request field some backend forwards (e.g. ``sandbox``): kept on the job as given."""
    _EXTENSIONS.add(name)


def extensions() -> frozenset[str]:
    _load_builtin_backends()
    return frozenset(_EXTENSIONS)


@dataclass
class Job:
    """One fine-tuning job: the fields every backend shares, and its backend's typed ``state``."""

    id: str
    tenant: str
    provider: str
    status: str
    stage: str
    model: str = ""
    training_file: str = ""
    created_at: int = 0
    updated_at: int = 0
    validation_file: str | None = None
    test_file: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    webhook: dict[str, Any] | None = None
    max_cost_usd: float | None = None
    estimate: dict[str, Any] | None = None
    prepare: dict[str, Any] | None = None
    # Request fields a backend forwards to its provider (e.g. ``sandbox`` fault options).
    extensions: dict[str, Any] = field(default_factory=dict)
    # The backend's own id and status for the job: public fields (None where there is none).
    provider_job_id: str | None = None
    provider_status: str | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    estimated_finish: int | None = None
    event_count: int = 0
    stage_changed_at: float | None = None
    prepared: dict[str, str] | None = None
    prepared_stop: str | None = None
    evaluation: dict[str, Any] | None = None
    experiment_id: str | None = None
    evaluate_base: bool = False
    model_deleted: bool = False
    integrations: list[Any] = field(default_factory=list)
    priority: int = 0  # order in the train wait queue (store.train_queue); older records: 0
    # How its backend runs the training (``compute {executor, num_workers, gpus_per_worker}``,
    # DESIGN §9), resolved at create; None for a backend that runs nothing itself.
    compute: dict[str, Any] | None = None
    # Set on a job copied from a provider account by an import (DESIGN §15): read-only history.
    import_id: str | None = None
    # Set on a job that trains nothing (an evaluate-only experiment candidate): it evaluates this
    # existing fine-tuned model of the tenant, made by the job ``evaluated_job``, on its test set.
    evaluated_model: str | None = None
    evaluated_job: str | None = None
    state: BackendState = field(default_factory=BackendState)
    # Keys this code does not know (written by a newer version): kept as they are.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _COMMON}
        out.pop("extensions")
        out.update(self.extensions)
        out["backend_state"] = self.state.to_dict()
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Job:
        _load_builtin_backends()
        common = {name: raw[name] for name in _COMMON if raw.get(name) is not None}
        common.setdefault("seed", DEFAULT_SEED)  # stored before seeds were picked (jobs.seeds)
        common["extensions"] = {k: raw[k] for k in _EXTENSIONS if raw.get(k) is not None}
        stored = raw.get("backend_state")
        if isinstance(stored, dict):
            known_type = _STATE_TYPES.get(str(stored.get("kind")))
            state = known_type.from_dict(stored) if known_type else UnknownState(raw=dict(stored))
        else:
            legacy = _STATE_TYPES.get(_LEGACY_KINDS.get(raw.get("provider", ""), "none"), BackendState)
            state = legacy.from_legacy(raw)
        known = _COMMON | _EXTENSIONS | _legacy_keys() | {"backend_state"}
        extra = {k: v for k, v in raw.items() if k not in known}
        return cls(**common, state=state, extra=extra)


_COMMON = frozenset(f.name for f in dataclasses.fields(Job) if f.name not in ("state", "extra"))


def _load_builtin_backends() -> None:
    """Import the registry once, so the built-in state types and legacy kinds are registered.

    Imported lazily: the backends import this module for ``Job``.
    """
    if not _LEGACY_KINDS:
        import service.core.backends.registry  # noqa: F401


def _legacy_keys() -> set[str]:
    return {key for cls in _STATE_TYPES.values() for key in cls.LEGACY.values()}


# --- the one owner of writes -------------------------------------------------------------------

Apply = Callable[[Job], None]


def load(store: Store, job_id: str) -> Job | None:
    raw = repo.load(store, job_id)
    return None if raw is None else Job.from_dict(raw)


def insert(store: Store, job: Job, created_ms: float) -> None:
    repo.insert(store, job.to_dict(), created_ms)


def write(store: Store, job_id: str, change: Callable[[Job, Pipeline], bool]) -> Job | None:
    """Read-modify-write of one job inside the store's WATCH/MULTI; ``change`` returns False to skip.

    Exceptions raised by ``change`` (an illegal transition) propagate and nothing is written.
    """

    def on_raw(raw: dict[str, Any], pipe: Pipeline) -> dict[str, Any] | None:
        job = Job.from_dict(raw)
        return job.to_dict() if change(job, pipe) else None

    stored = repo.update(store, job_id, on_raw)
    return None if stored is None else Job.from_dict(stored)


def modify(store: Store, job_id: str, apply: Apply) -> Job | None:
    """Apply a typed change (bookkeeping, no event); None when the job does not exist."""

    def change(job: Job, pipe: Pipeline) -> bool:
        apply(job)
        return True

    return write(store, job_id, change)


def state_of(job: Job, kind: type[BackendState]) -> Any:
    """The job's state as ``kind`` (a fresh one when the job has none yet, e.g. a new job)."""
    if not isinstance(job.state, kind):
        job.state = kind()
    return job.state
