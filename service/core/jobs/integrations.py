"""A job's ``integrations`` (OpenAI's field): the experiment trackers its training reports to.

OpenAI defines ``{"type": "wandb", "wandb": {"project", "name", "entity", "tags"}}``; Tuneline adds
``{"type": "mlflow", "mlflow": {"experiment_name", "run_name"}}``. Which types a job may ask for
depends on its backend (``Backend.integrations``): a backend that cannot honour one refuses the
job at create instead of dropping the request silently.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import InvalidRequest, Unprocessable

WANDB, MLFLOW = "wandb", "mlflow"
TYPES = (WANDB, MLFLOW)


def checked(integrations: list[dict[str, Any]] | None, provider: str, honoured: tuple[str, ...]) -> list[Any]:
    """The job's integrations as it stores and echoes them (unset settings left out); refuses a
    type ``provider`` cannot honour, and a type asked for twice, naming ``integrations.<i>.type``."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(integrations or []):
        kind = item["type"]
        param = f"integrations.{index}.type"
        if kind in seen:
            raise InvalidRequest(
                f"Integration {kind!r} is given twice; a job reports to one run per tracker.",
                param=param,
                code="duplicate_integration",
            )
        seen.add(kind)
        if kind not in honoured:
            supported = ", ".join(honoured) or "none"
            raise Unprocessable(
                f"Provider {provider!r} cannot report to {kind} (integrations it supports: {supported}).",
                param=param,
                code="unsupported_integration",
            )
        settings = {k: v for k, v in (item.get(kind) or {}).items() if v is not None}
        out.append({"type": kind, kind: settings})
    return out
