"""The infer queue: completions (and scores of given replies) from locally trained models, models
cached per worker process."""

from __future__ import annotations

from typing import Any

from celery import Celery

from service import taskqueue
from service.core import inference
from service.core.backends import local_export, local_run
from workers.context import context


def _engine_options() -> dict[str, Any]:
    settings = context().settings
    return {"cache_dir": local_run.model_cache_dir(settings), "max_models": settings.infer_cache_models}


def _generate(*args: Any, **kwargs: Any) -> tuple[str, str, int, int]:
    # Imported here, not at module level: workers without the train extra (no torch) still
    # import workers.main; on them a request fails with a clear error instead.
    from service.training.inference import generate

    result: tuple[str, str, int, int] = generate(*args, **{**kwargs, **_engine_options()})
    return result


def _stream(*args: Any, **kwargs: Any) -> Any:
    from service.training.inference import generate_stream

    return generate_stream(*args, **{**kwargs, **_engine_options()})


def _score(*args: Any, **kwargs: Any) -> tuple[list[float], list[int]]:
    from service.training.preference import score_replies

    result: tuple[list[float], list[int]] = score_replies(*args, **{**kwargs, **_engine_options()})
    return result


def register(app: Celery) -> None:
    @app.task(name=taskqueue.INFER_COMPLETE, soft_time_limit=570, time_limit=600)
    def complete(request_id: str) -> None:
        inference.serve_completion(context().store, request_id, _generate, _stream)

    @app.task(name=taskqueue.INFER_SCORE, soft_time_limit=570, time_limit=600)
    def score(request_id: str) -> None:
        inference.serve_scores(context().store, request_id, _score)

    # The build runs in a child process (its memory is returned when it ends); the task only waits.
    @app.task(name=taskqueue.INFER_EXPORT, soft_time_limit=None, time_limit=None)
    def export(job_id: str, fmt: str, quantization: str, step: str) -> None:
        ctx = context()
        local_export.build(ctx.settings, ctx.store, job_id, fmt, quantization, step)
