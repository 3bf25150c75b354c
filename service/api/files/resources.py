"""Files routes: upload (streamed), list, retrieve, content, delete."""

from __future__ import annotations

from typing import Any

from flask import send_file
from flask.views import MethodView

from service.api import examples
from service.api.base import Blueprint, list_body, principal, services
from service.api.files.schemas import (
    FileContentArgsSchema,
    FileDeletedSchema,
    FileListArgsSchema,
    FileListSchema,
    FileReportSchema,
    FileSchema,
    FileUploadSchema,
)
from service.api.idempotent import idempotent
from service.api.uploads import spool_of
from service.core import files, preparation

blp = Blueprint("files", __name__, url_prefix="/v1/files", description="Datasets (OpenAI Files API).")


@blp.route("")
class Files(MethodView):
    @blp.arguments(FileUploadSchema, location="multipart")
    @blp.response(200, FileSchema, example=examples.FILE)
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": "Idempotency-Key",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            }
        ]
    )
    def post(self, form: dict[str, Any]) -> Any:
        """Upload a dataset file (multipart, streamed to disk)."""
        svc = services()
        storage = form["file"]
        spool = spool_of(storage)
        fields = {
            "route": "files.create",
            "purpose": form["purpose"],
            "filename": storage.filename,
            "sha256": spool.sha256,
            "bytes": spool.size,
        }
        return idempotent(
            fields,
            lambda: files.create_file(
                svc.store,
                svc.dispatcher,
                svc.settings.data_dir,
                principal(),
                spool,
                storage.filename or "",
                form["purpose"],
            ).public(),
        )

    @blp.arguments(FileListArgsSchema, location="query")
    @blp.response(
        200,
        FileListSchema,
        example={
            "object": "list",
            "data": [examples.FILE],
            "has_more": False,
            "first_id": examples.FILE["id"],
            "last_id": examples.FILE["id"],
        },
    )
    def get(self, args: dict[str, Any]) -> Any:
        """List files, newest first."""
        found, has_more = files.list_files(
            services().store, principal(), args.get("after"), args["limit"], args.get("purpose")
        )
        return list_body([f.public() for f in found], has_more)


@blp.route("/<string:file_id>")
class FileById(MethodView):
    @blp.response(200, FileSchema, example=examples.FILE)
    def get(self, file_id: str) -> Any:
        """Retrieve a file's metadata."""
        return files.get_file(services().store, principal(), file_id).public()

    @blp.response(
        200, FileDeletedSchema, example={"id": examples.FILE["id"], "object": "file", "deleted": True}
    )
    def delete(self, file_id: str) -> Any:
        """Delete a file: metadata, bytes and prepared outputs."""
        svc = services()
        record = files.delete_file(svc.store, svc.settings.data_dir, principal(), file_id)
        return {"id": record.id, "object": "file", "deleted": True}


@blp.route("/<string:file_id>/content")
class FileContent(MethodView):
    @blp.arguments(FileContentArgsSchema, location="query")
    @blp.response(200, {"type": "string", "format": "binary"}, content_type="application/octet-stream")
    def get(self, args: dict[str, Any], file_id: str) -> Any:
        """Download a file's bytes, or with `prepared_for=MODEL` the JSONL prepared for that model."""
        svc = services()
        if args.get("prepared_for"):
            record, path = preparation.prepared_content(
                svc.store, svc.settings.data_dir, principal(), file_id, args["prepared_for"]
            )
            name = f"{record.filename.rsplit('.', 1)[0]}.prepared.jsonl"
            return send_file(path, mimetype="application/jsonl", download_name=name, conditional=False)
        record, path = files.file_content_path(svc.store, svc.settings.data_dir, principal(), file_id)
        return send_file(
            path,
            mimetype="application/octet-stream",
            download_name=record.filename,
            as_attachment=False,
            conditional=False,
            etag=record.sha256,
        )


@blp.route("/<string:file_id>/report")
class FileReport(MethodView):
    @blp.response(200, FileReportSchema, example=examples.REPORT)
    def get(self, file_id: str) -> Any:
        """The preparation report: per-line findings, fixes, token statistics, cost per model."""
        return preparation.report_for(services().store, principal(), file_id)
