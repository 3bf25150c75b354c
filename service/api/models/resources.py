"""``/v1/models``: the tenant's fine-tuned models (list, retrieve, delete)."""

from __future__ import annotations

from typing import Any

from flask import send_file
from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, list_body, principal, services
from service.api.models.schemas import (
    ModelDeletedSchema,
    ModelExportArgsSchema,
    ModelExportSchema,
    ModelListArgsSchema,
    ModelListSchema,
    ModelSchema,
)
from service.core import exports, finetuned_models

blp = Blueprint(
    "models",
    __name__,
    url_prefix="/v1/models",
    description="Your fine-tuned models (OpenAI's Models API shape; another tenant's model is 404).",
)


@blp.route("")
class Models(MethodView):
    @blp.arguments(ModelListArgsSchema, location="query")
    @blp.response(
        200, ModelListSchema, example={"object": "list", "data": [examples.MODEL], "has_more": False}
    )
    def get(self, args: dict[str, Any]) -> Any:
        """List your fine-tuned models, newest first."""
        return list_body(
            *finetuned_models.list_models(services().store, principal(), args.get("after"), args["limit"])
        )


@blp.route("/<path:model>/content")
class ModelContent(MethodView):
    @blp.arguments(ModelExportArgsSchema, location="query")
    @blp.response(202, ModelExportSchema, example=examples.MODEL_EXPORT)
    @blp.alt_response(
        200,
        content_type="application/octet-stream",
        description="The built export, a `.tar` of one directory: the weights and a model card "
        "(README.md); for gguf the `.gguf` file and an Ollama `Modelfile`",
        success=True,
    )
    def get(self, args: dict[str, Any], model: str) -> Any:
        """Download a local model (or a `...:ckpt-step-N` checkpoint) as adapter, merged or GGUF.

        The first request starts building it in the background and answers 202 with its status
        (and `Retry-After`); once built (an event on the job says so) the file is streamed.
        """
        svc = services()
        fmt, quantization = args["format"], args.get("quantization")
        state = exports.export(svc.backends, svc.store, principal(), model, fmt, quantization)
        if state.file is None:
            headers = {"Retry-After": str(exports.RETRY_AFTER_S)}
            return exports.status_object(model, fmt, quantization, state), 202, headers
        return send_file(
            state.file,
            mimetype="application/x-tar" if state.filename.endswith(".tar") else "application/octet-stream",
            as_attachment=True,
            download_name=state.filename,
            conditional=True,  # Range requests: an interrupted download can resume
        )


@blp.route("/<model_id:model>")
class ModelById(MethodView):
    @blp.response(200, ModelSchema, example=examples.MODEL)
    def get(self, model: str) -> Any:
        """Retrieve one of your fine-tuned models."""
        return finetuned_models.get_model(services().store, principal(), model)

    @blp.response(200, ModelDeletedSchema, example=examples.MODEL_DELETED)
    def delete(self, model: str) -> Any:
        """Delete a fine-tuned model and its files; later completions with it answer 404."""
        svc = services()
        return finetuned_models.delete_model(svc.backends, svc.store, principal(), model)
