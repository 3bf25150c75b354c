"""The infer queue: completions from locally trained models, models cached per worker process."""

from __future__ import annotations

from typing import Any

from celery import Celery

from service import taskqueue
from service.core import inference
from service.core.backends import local_run
from workers.context import context


def _generate(*args: Any, **kwargs: Any) -> tuple[str, str, int, int]:
    # Imported here, not at module level: workers without the train extra (no torch) still
    # import workers.main; on them a request fails with a clear error instead.
    from service.training.inference import generate

    cache_dir = local_run.model_cache_dir(context().settings)
    result: tuple[str, str, int, int] = generate(*args, cache_dir=cache_dir, **kwargs)
    return result


def register(app: Celery) -> None:
    @app.task(name=taskqueue.INFER_COMPLETE, soft_time_limit=570, time_limit=600)
    def complete(request_id: str) -> None:
        inference.serve_completion(context().store, request_id, _generate)
