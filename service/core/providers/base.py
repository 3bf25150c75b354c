"""The provider interface and the provider-neutral data it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class ProviderError(Exception):
    """A provider call failed. ``retryable`` follows the openai SDK's own classification."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.code = code
        # The request may have reached the provider (timeout, connection reset, 5xx on create).
        self.ambiguous = ambiguous


@dataclass
class ProviderJob:
    id: str
    status: str
    model: str = ""
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    estimated_finish: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ProviderEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProviderCheckpoint:
    id: str
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class CompletionRequest:
    """One inference call: chat ``messages`` or a text ``prompt`` (exactly one is set)."""

    model: str
    messages: list[dict[str, Any]] | None
    prompt: str | None
    max_tokens: int = 256
    temperature: float = 0.0
    stop: list[str] | None = None


@dataclass
class CompletionResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Provider(Protocol):
    name: str
    account: str  # identifies the provider account, for file reuse and rate limits

    def upload_file(self, path: Path, filename: str) -> str: ...
    def file_exists(self, file_id: str) -> bool: ...
    def create_job(self, request: CreateJobRequest) -> ProviderJob: ...
    def find_job(self, tuneline_job_id: str) -> ProviderJob | None: ...
    def get_job(self, job_id: str) -> ProviderJob: ...
    def list_events(self, job_id: str, limit: int = 100) -> list[ProviderEvent]: ...
    def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]: ...
    def cancel(self, job_id: str) -> ProviderJob: ...
    def result_metrics(self, file_id: str) -> list[dict[str, Any]]: ...
    def complete(self, request: CompletionRequest) -> CompletionResult: ...
