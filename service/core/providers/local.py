"""The ``local`` provider: job options checked at create, and the provider face of a finished run.

Training itself runs in a child process driven by ``service.core.jobs.local_pipeline``; this
module only knows what a local job may ask for and how to read a finished run's result file.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from service.core.datasets.models import DEFAULT_MODEL
from service.core.errors import InvalidRequest, Unprocessable
from service.core.jobs.metrics import METRIC_COLUMNS
from service.core.providers.base import (
    CompletionRequest,
    CompletionResult,
    CreateJobRequest,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderJob,
)

NAME = "local"
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
        raise Unprocessable(
            "The local provider trains from a base model; continuing from a fine-tuned model is not "
            "supported.",
            param="model",
            code="model_not_supported",
        )
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


def _supervised_hyper(method: dict[str, Any] | None) -> dict[str, Any]:
    if not method:
        return {}
    if method.get("type") != "supervised":
        raise Unprocessable(
            f"The local provider supports method.type 'supervised' only, not {method.get('type')!r}.",
            param="method.type",
            code="unsupported_method",
        )
    return dict(((method.get("supervised") or {}).get("hyperparameters")) or {})


def _given(hyper: dict[str, Any], name: str) -> bool:
    return name in hyper and hyper[name] != "auto"


def refuse_local_knobs(hyper: dict[str, Any], method: dict[str, Any] | None, provider: str) -> None:
    """Another provider would reject (or silently ignore) the local trainer's knobs: say so now."""
    nested = {
        kind: ((method or {}).get(kind) or {}).get("hyperparameters") or {} for kind in ("supervised", "dpo")
    }
    for prefix, values in (
        ("hyperparameters", hyper),
        *((f"method.{k}.hyperparameters", v) for k, v in nested.items()),
    ):
        _refuse_present(
            values,
            LOCAL_KNOBS,
            prefix,
            f"is a local-trainer setting; provider {provider!r} does not accept it.",
            "unsupported_hyperparameter",
        )


def _refuse_present(values: dict[str, Any], names: tuple[str, ...], prefix: str, why: str, code: str) -> None:
    for name in names:
        if name in values:
            raise InvalidRequest(f"{name} {why}", param=f"{prefix}.{name}", code=code)


def effective_hyperparameters(hyper: dict[str, Any], method: dict[str, Any] | None) -> dict[str, Any]:
    """The job's hyperparameters for the local trainer: top level, then ``method.supervised``'s.

    Raises a 4xx naming the field for combinations that cannot work together.
    """
    nested = _supervised_hyper(method)
    merged: dict[str, Any] = {name: "auto" for name in OPENAI_KNOBS}
    merged.update(hyper)
    merged.update(nested)
    param = "method.supervised.hyperparameters" if nested else "hyperparameters"
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


def estimate(n_epochs: int) -> dict[str, Any]:
    """Training on your own hardware bills no tokens."""
    return {"n_epochs": n_epochs, "billed_tokens": 0, "price_per_million": 0.0, "cost_usd": 0.0}


def _not_supported(what: str) -> ProviderError:
    return ProviderError(
        f"the local provider does not {what} (local jobs train in the train queue)",
        retryable=False,
        code="not_supported",
    )


class LocalProvider:
    """What the shared pipeline asks of a provider after training: the run's result metrics.

    ``provider_result_files`` of a local job are paths relative to the data directory.
    """

    name = NAME

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.account = f"local:{self.data_dir}"

    def result_metrics(self, file_id: str) -> list[dict[str, Any]]:
        path = (self.data_dir / file_id).resolve()
        if not path.is_relative_to(self.data_dir):
            raise ProviderError(f"result file {file_id} is outside the data directory", retryable=False)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                return [_metric_row(record) for record in csv.DictReader(fh)]
        except FileNotFoundError:
            raise ProviderError(
                f"the training run left no result file at {file_id}", retryable=False, code="result_missing"
            ) from None

    def upload_file(self, path: Path, filename: str) -> str:
        raise _not_supported("upload files")

    def file_exists(self, file_id: str) -> bool:
        return False

    def create_job(self, request: CreateJobRequest) -> ProviderJob:
        raise _not_supported("create remote jobs")

    def find_job(self, tuneline_job_id: str) -> ProviderJob | None:
        return None

    def get_job(self, job_id: str) -> ProviderJob:
        raise _not_supported("poll remote jobs")

    def list_events(self, job_id: str, limit: int = 100) -> list[ProviderEvent]:
        return []

    def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        return []

    def cancel(self, job_id: str) -> ProviderJob:
        raise _not_supported("cancel remote jobs")

    def complete(self, request: CompletionRequest) -> CompletionResult:
        raise _not_supported("complete here (service.core.inference.request_completion serves local models)")


def _metric_row(record: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in METRIC_COLUMNS:
        raw = (record.get(name) or "").strip()
        row[name] = None if raw == "" else (int(float(raw)) if name == "step" else float(raw))
    return row
