"""The experiment trackers a run reports to (the job's ``integrations``): W&B and MLflow.

transformers' own callbacks (``report_to``) log the trainer's per-step metrics and arguments.
This module opens the runs before the trainer starts, so that they carry what those callbacks
cannot: the job's name and id, the caller's project, entity and tags, Tuneline's hyperparameters,
and one run per job across pauses and restarts (the W&B run's id is the job id; the MLflow run is
found again by its ``tuneline.job_id`` tag). The callbacks then log into these runs.

Keys never come from the spec: ``WANDB_API_KEY`` is in the child's environment when the operator
set one (else the spec says ``mode: offline`` and the run is written under the job's output). A
run on Ray, whose workers do not inherit the train worker's environment, gets the path of a file
holding the key instead (``api_key_file``, written by ``service.core.backends.ray_executor``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.training.errors import TRAINING_FAILED, TrainingError

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline")
DEFAULT_EXPERIMENT = "tuneline"
JOB_TAG = "tuneline.job_id"
# How a run ended -> the tracker's word for it (a paused run reopens when the job resumes).
MLFLOW_STATUS = {"finished": "FINISHED", "paused": "KILLED", "failed": "FAILED"}
WANDB_EXIT_CODE = {"finished": 0, "paused": 0, "failed": 1}


def _text(raw: Mapping[str, Any], name: str, where: str, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise TrainingError(TRAINING_FAILED, f"integrations.{where}.{name} must be a non-empty string")
    return value


@dataclass(frozen=True)
class WandbTarget:
    project: str
    name: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()
    mode: str = "offline"
    base_url: str | None = None
    api_key_file: str | None = None  # where the key is, never the key (a run on Ray)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WandbTarget:
        mode = raw.get("mode") or "offline"
        if mode not in WANDB_MODES:
            raise TrainingError(TRAINING_FAILED, f"integrations.wandb.mode must be one of {WANDB_MODES}")
        tags = raw.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise TrainingError(TRAINING_FAILED, "integrations.wandb.tags must be a list of strings")
        return cls(
            project=str(_text(raw, "project", "wandb", required=True)),
            name=_text(raw, "name", "wandb"),
            entity=_text(raw, "entity", "wandb"),
            tags=tuple(tags),
            mode=mode,
            base_url=_text(raw, "base_url", "wandb"),
            api_key_file=_text(raw, "api_key_file", "wandb"),
        )


@dataclass(frozen=True)
class MlflowTarget:
    tracking_uri: str
    experiment_name: str | None = None
    run_name: str | None = None
    artifact_location: str | None = None  # only for a store Tuneline keeps itself

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MlflowTarget:
        return cls(
            tracking_uri=str(_text(raw, "tracking_uri", "mlflow", required=True)),
            experiment_name=_text(raw, "experiment_name", "mlflow"),
            run_name=_text(raw, "run_name", "mlflow"),
            artifact_location=_text(raw, "artifact_location", "mlflow"),
        )


@dataclass(frozen=True)
class Integrations:
    """What a run reports to; empty when the job asked for no tracker."""

    wandb: WandbTarget | None = None
    mlflow: MlflowTarget | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # on every run (job id, tenant, model)

    @classmethod
    def from_dict(cls, raw: Any) -> Integrations:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise TrainingError(TRAINING_FAILED, "integrations must be an object")
        unknown = set(raw) - {"wandb", "mlflow", "tags"}
        if unknown:
            raise TrainingError(TRAINING_FAILED, f"unknown integration {sorted(unknown)[0]!r}")
        tags = raw.get("tags") or {}
        if not isinstance(tags, dict):
            raise TrainingError(TRAINING_FAILED, "integrations.tags must be an object")
        return cls(
            wandb=WandbTarget.from_dict(raw["wandb"]) if raw.get("wandb") else None,
            mlflow=MlflowTarget.from_dict(raw["mlflow"]) if raw.get("mlflow") else None,
            tags={str(k): str(v) for k, v in tags.items()},
        )

    @property
    def report_to(self) -> list[str]:
        """transformers' ``report_to``: the built-in callbacks that log into the open runs."""
        return [name for name, target in (("wandb", self.wandb), ("mlflow", self.mlflow)) if target]


class Runs:
    """The tracker runs this process opened; ``end`` closes them with how the run ended."""

    def __init__(self, wandb_run: Any = None, mlflow_run: bool = False) -> None:
        self.wandb_run = wandb_run
        self.mlflow_run = mlflow_run
        self.outcome = "finished"  # the engine says "paused" when the run stops for a pause

    def end(self, outcome: str) -> None:
        if self.mlflow_run:
            import mlflow

            mlflow.end_run(status=MLFLOW_STATUS[outcome])
            self.mlflow_run = False
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=WANDB_EXIT_CODE[outcome])
            self.wandb_run = None


def _main_process() -> bool:
    """Rank 0 of a data-parallel run (Ray Train) or the only process: the one that logs."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def start(
    integrations: Integrations, job_id: str, output_dir: Path, hyperparameters: Mapping[str, Any]
) -> Runs:
    """Open the job's runs (none on a non-main rank); raises ``TrainingError`` naming the tracker."""
    if not integrations.report_to or not _main_process():
        return Runs()
    runs = Runs()
    try:
        if integrations.mlflow:
            runs.mlflow_run = _start_mlflow(integrations.mlflow, integrations.tags, job_id, hyperparameters)
        if integrations.wandb:
            runs.wandb_run = _start_wandb(
                integrations.wandb, integrations.tags, job_id, output_dir, hyperparameters
            )
    except TrainingError:
        runs.end("failed")
        raise
    return runs


@contextlib.contextmanager
def reporting(
    integrations: Integrations, job_id: str, output_dir: Path, hyperparameters: Mapping[str, Any]
) -> Iterator[Runs]:
    """The job's runs open for the block; closed as ``runs.outcome`` says, or failed on an error."""
    runs = start(integrations, job_id, output_dir, hyperparameters)
    try:
        yield runs
    except BaseException:
        runs.end("failed")
        raise
    runs.end(runs.outcome)


def _start_mlflow(
    target: MlflowTarget, tags: Mapping[str, str], job_id: str, hyperparameters: Mapping[str, Any]
) -> bool:
    # Usage telemetry stays off on a self-hosted service (MLflow 3 sends it by default).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise TrainingError(
            TRAINING_FAILED, "the mlflow integration needs mlflow-skinny (the `train` extra)"
        ) from None
    try:
        mlflow.set_tracking_uri(target.tracking_uri)
        client = mlflow.MlflowClient(target.tracking_uri)
        name = target.experiment_name or DEFAULT_EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            with contextlib.suppress(MlflowException):  # another run created it meanwhile
                client.create_experiment(name, artifact_location=_file_uri(target.artifact_location))
            experiment = client.get_experiment_by_name(name)
        assert experiment is not None
        # One run per job: a resumed or restarted run reopens it (its steps go on).
        found = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1
        )
        mlflow.start_run(
            run_id=found[0].info.run_id if found else None,
            experiment_id=experiment.experiment_id,
            run_name=None if found else (target.run_name or job_id),
            tags={**tags, JOB_TAG: job_id},
        )
        mlflow.log_params({f"tuneline.{k}": v for k, v in hyperparameters.items()})
    except MlflowException as exc:
        raise TrainingError(TRAINING_FAILED, f"integrations mlflow: {exc.message}") from None
    return True


def _file_uri(path: str | None) -> str | None:
    return Path(path).as_uri() if path else None


def _start_wandb(
    target: WandbTarget,
    tags: Mapping[str, str],
    job_id: str,
    output_dir: Path,
    hyperparameters: Mapping[str, Any],
) -> Any:
    # Everything W&B keeps goes under the job's output (the child has no HOME of its own).
    home = output_dir / "wandb-home"
    for name, sub in (("CONFIG", "config"), ("CACHE", "cache"), ("DATA", "data"), ("ARTIFACT", "artifacts")):
        os.environ.setdefault(f"WANDB_{name}_DIR", str(home / sub))
    if target.api_key_file:
        # This process's environment only, where the child has it too (never logged, never shown).
        os.environ["WANDB_API_KEY"] = _read_key(target.api_key_file)
    try:
        import wandb
    except ImportError:
        raise TrainingError(
            TRAINING_FAILED, "the wandb integration needs wandb (the `train` extra)"
        ) from None
    settings: dict[str, Any] = {
        "silent": True,
        "console": "off",  # stdout is the protocol channel: W&B must not wrap it
        "disable_git": True,  # the worker's checkout is not the caller's business
        "disable_code": True,
        "save_code": False,
        "x_save_requirements": False,
    }
    if target.base_url:
        settings["base_url"] = target.base_url
    try:
        return wandb.init(
            project=target.project,
            entity=target.entity,
            name=target.name or job_id,
            id=job_id,
            resume="allow",
            tags=[*target.tags, "tuneline/finetune", f"tuneline/{job_id}"],
            dir=str(output_dir),
            mode="online" if target.mode == "online" else "offline",
            config={
                "tuneline": {**hyperparameters, **{k.removeprefix("tuneline."): v for k, v in tags.items()}}
            },
            settings=wandb.Settings(**settings),
        )
    except Exception as exc:  # wandb raises its own types, and plain ones for a bad key
        raise TrainingError(TRAINING_FAILED, f"integrations wandb: {exc}") from None


def _read_key(path: str) -> str:
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TrainingError(
            TRAINING_FAILED, f"integrations wandb: cannot read the W&B key file {path}: {exc.strerror}"
        ) from None
    if not key:
        raise TrainingError(TRAINING_FAILED, f"integrations wandb: the W&B key file {path} is empty")
    return key
