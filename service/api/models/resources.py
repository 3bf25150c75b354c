"""``/v1/models``: the tenant's fine-tuned models (list, retrieve, delete)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, list_body, principal, services
from service.api.models.schemas import ModelDeletedSchema, ModelListArgsSchema, ModelListSchema, ModelSchema
from service.core import finetuned_models

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


@blp.route("/<path:model>")
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
