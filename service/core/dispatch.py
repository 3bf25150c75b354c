"""The port through which use cases enqueue work; the Celery adapter lives in service.taskqueue."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    def enqueue(self, task_name: str, *args: str, queue: str | None = None) -> None:
        """Send a task by name with id-only arguments."""


class RecordingDispatcher:
    """Collects enqueued tasks; used where no broker exists (CLI, unit tests)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, ...]]] = []

    def enqueue(self, task_name: str, *args: str, queue: str | None = None) -> None:
        self.sent.append((task_name, args))
