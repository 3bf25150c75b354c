"""Exports of a tenant's fine-tuned models (and their checkpoints) to files other tools load (DESIGN §14).

This module resolves what is asked for and answers in the API's terms; the backend that trained
the model builds the export (the local one in the background, once) or refuses (NotSupported).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.core import finetuned_models
from service.core.auth import Principal
from service.core.backends.base import Backend, ExportRequest, ExportState
from service.core.errors import InvalidRequest
from service.core.store import Store

FORMATS = ("adapter", "merged", "gguf")
QUANTIZATIONS = ("f16", "q8_0")
RETRY_AFTER_S = 5  # how soon a client polling a building export asks again


def export_request(model: str, fmt: str, quantization: str | None, step: int | None) -> ExportRequest:
    """Check the query: ``format`` one of FORMATS; ``quantization`` for gguf only (default f16)."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}.", param="format")
    if fmt != "gguf" and quantization is not None:
        raise InvalidRequest("quantization applies to format=gguf only.", param="quantization")
    quantization = quantization or "f16"
    if quantization not in QUANTIZATIONS:
        raise InvalidRequest(
            f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.",
            param="quantization",
        )
    return ExportRequest(model=model, format=fmt, quantization=quantization, step=step)


def export(
    backends: Callable[[str], Backend],
    store: Store,
    principal: Principal,
    model: str,
    fmt: str,
    quantization: str | None,
) -> ExportState:
    """The export of ``model`` in ``fmt``: built (its file) or building (started by this call or an
    earlier one). Another tenant's model is 404; a backend that cannot export answers 409."""
    job, step = finetuned_models.resolve_checkpoint(store, principal, model)
    request = export_request(model, fmt, quantization, step)
    return backends(job.provider).export(job, request)


def status_object(model: str, fmt: str, quantization: str | None, state: ExportState) -> dict[str, Any]:
    """What a request for an export that is not built yet answers (202), to poll until it is."""
    return {
        "object": "model.export",
        "model": model,
        "format": fmt,
        "quantization": (quantization or "f16") if fmt == "gguf" else None,
        "status": state.status,
        "retry_after": RETRY_AFTER_S,
    }
