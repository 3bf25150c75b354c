"""Per-process wiring for tasks: settings, store and dispatcher, built once on first use."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from service.core.store import Store
from service.settings import Settings
from service.taskqueue import CeleryDispatcher


@dataclass
class WorkerContext:
    settings: Settings
    store: Store
    dispatcher: CeleryDispatcher


_settings: Settings | None = None
_dispatcher: CeleryDispatcher | None = None


def configure(settings: Settings, dispatcher: CeleryDispatcher) -> None:
    global _settings, _dispatcher
    _settings, _dispatcher = settings, dispatcher
    context.cache_clear()


@cache
def context() -> WorkerContext:
    if _settings is None or _dispatcher is None:
        raise RuntimeError("workers.context.configure() was not called (use workers.main)")
    return WorkerContext(
        settings=_settings, store=Store.from_url(_settings.redis_url), dispatcher=_dispatcher
    )
