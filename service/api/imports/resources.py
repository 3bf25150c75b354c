"""``/v1/imports``: copy an OpenAI-shaped account's fine-tuning history into Tuneline (DESIGN §15)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, CursorArgsSchema, list_body, principal, services
from service.api.idempotent import idempotent
from service.api.imports.schemas import (
    DistillCreateSchema,
    DistillSchema,
    ImportCreateSchema,
    ImportListSchema,
    ImportSchema,
    RetrainCreateSchema,
    RetrainSchema,
)
from service.api.jobs.resources import IDEMPOTENCY_HEADER, jobs_context
from service.core.imports import distill, retrain
from service.core.imports import usecases as imports
from service.core.imports.usecases import ImportsContext

blp = Blueprint(
    "imports",
    __name__,
    url_prefix="/v1/imports",
    description="Import an OpenAI (or Azure, or OpenAI-shaped) account's fine-tuning history: "
    "files, jobs, events, checkpoints and metrics, recorded read-only.",
)


def imports_context() -> ImportsContext:
    svc = services()
    return ImportsContext(settings=svc.settings, store=svc.store, dispatcher=svc.dispatcher, box=svc.box)


@blp.route("")
class Imports(MethodView):
    @blp.arguments(ImportCreateSchema, example=examples.IMPORT_CREATE)
    @blp.response(202, ImportSchema, example=examples.IMPORT_QUEUED)
    @blp.doc(parameters=IDEMPOTENCY_HEADER)
    def post(self, body: dict[str, Any]) -> Any:
        """Start an import; it runs in the background (follow `status` and `progress`)."""
        return idempotent(
            {"route": "imports.create", **body},
            lambda: imports.create_import(imports_context(), principal(), body),
            status=202,
        )

    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, ImportListSchema, example=examples.IMPORTS)
    def get(self, args: dict[str, Any]) -> Any:
        """List your imports, newest first."""
        return list_body(
            *imports.list_imports(services().store, principal(), args.get("after"), args["limit"])
        )


@blp.route("/<string:import_id>")
class ImportById(MethodView):
    @blp.response(200, ImportSchema, example=examples.IMPORT)
    def get(self, import_id: str) -> Any:
        """Retrieve an import: its status, progress, and what was skipped and why."""
        return imports.get_import(services().store, principal(), import_id)


@blp.route("/<string:import_id>/retrain")
class ImportRetrain(MethodView):
    @blp.arguments(RetrainCreateSchema, example=examples.IMPORT_RETRAIN)
    @blp.response(200, RetrainSchema, example=examples.IMPORT_RETRAINED)
    @blp.doc(parameters=IDEMPOTENCY_HEADER)
    def post(self, body: dict[str, Any], import_id: str) -> Any:
        """Re-train a finished import: one experiment per imported job, the original model beside
        the candidates. The same request again answers the same experiments."""
        return idempotent(
            {"route": "imports.retrain", "import_id": import_id, **body},
            lambda: retrain.retrain_import(jobs_context(), principal(), import_id, body),
        )


@blp.route("/<string:import_id>/distill")
class ImportDistill(MethodView):
    @blp.arguments(DistillCreateSchema, example=examples.IMPORT_DISTILL)
    @blp.response(202, DistillSchema, example=examples.IMPORT_DISTILLING)
    @blp.doc(parameters=IDEMPOTENCY_HEADER)
    def post(self, body: dict[str, Any], import_id: str) -> Any:
        """Distill a finished import (opt-in): its original models answer their training prompts,
        within `max_cost_usd`, as new training files; follow it in the import's `distill`."""
        return idempotent(
            {"route": "imports.distill", "import_id": import_id, **body},
            lambda: distill.start_distill(jobs_context(), principal(), import_id, body),
            status=202,
        )
