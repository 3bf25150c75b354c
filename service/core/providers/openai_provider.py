"""The ``openai``/``azure``/``sandbox`` providers: one implementation over the official SDK."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from pathlib import Path
from typing import Any

import openai

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
from service.core.providers.errors import map_error

# OpenAI's result files have used both names for the training accuracy column.
_COLUMN_ALIASES = {"train_accuracy": "train_mean_token_accuracy"}


def _job(raw: Any) -> ProviderJob:
    error = getattr(raw, "error", None)
    error_dict = None
    if error is not None and (getattr(error, "message", None) or getattr(error, "code", None)):
        error_dict = {"code": error.code, "message": error.message, "param": getattr(error, "param", None)}
    return ProviderJob(
        id=raw.id,
        status=raw.status,
        model=getattr(raw, "model", "") or "",
        fine_tuned_model=raw.fine_tuned_model,
        trained_tokens=raw.trained_tokens,
        error=error_dict,
        result_files=list(raw.result_files or []),
        estimated_finish=getattr(raw, "estimated_finish", None),
        metadata=dict(getattr(raw, "metadata", None) or {}),
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


class OpenAIProvider:
    """Talks to OpenAI, Azure OpenAI, or any API of the same shape (the sandbox included)."""

    def __init__(self, name: str, client: openai.OpenAI, account: str) -> None:
        self.name = name
        self.account = account
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
        except ProviderError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_job(self, request: CreateJobRequest) -> ProviderJob:
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
        if request.extra_body:
            kwargs["extra_body"] = request.extra_body
        return _job(self._call(self._create_client.fine_tuning.jobs.create, **kwargs))

    def find_job(self, tuneline_job_id: str) -> ProviderJob | None:
        page = self._call(
            self._client.fine_tuning.jobs.list, metadata={"tuneline_job_id": tuneline_job_id}, limit=10
        )
        for raw in page.data:
            if (getattr(raw, "metadata", None) or {}).get("tuneline_job_id") == tuneline_job_id:
                return _job(raw)
        return None

    def get_job(self, job_id: str) -> ProviderJob:
        return _job(self._call(self._client.fine_tuning.jobs.retrieve, job_id))

    def list_events(self, job_id: str, limit: int = 100) -> list[ProviderEvent]:
        page = self._call(self._client.fine_tuning.jobs.list_events, job_id, limit=limit)
        out = []
        for e in page.data:
            data = getattr(e, "data", None)
            out.append(
                ProviderEvent(
                    id=e.id,
                    created_at=e.created_at,
                    level=e.level,
                    message=e.message,
                    type=getattr(e, "type", None) or "message",
                    data=dict(data) if isinstance(data, dict) else {},
                )
            )
        return out

    def list_checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        page = self._call(self._client.fine_tuning.jobs.checkpoints.list, job_id, limit=100)
        out = []
        for c in page.data:
            metrics = c.metrics.model_dump(exclude_none=True) if c.metrics is not None else {}
            out.append(
                ProviderCheckpoint(
                    id=c.id,
                    created_at=c.created_at,
                    step_number=c.step_number,
                    fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
                    metrics=metrics,
                )
            )
        return out

    def cancel(self, job_id: str) -> ProviderJob:
        return _job(self._call(self._client.fine_tuning.jobs.cancel, job_id))

    def result_metrics(self, file_id: str) -> list[dict[str, Any]]:
        content = self._call(self._client.files.content, file_id)
        return parse_result_csv(content.content)

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
