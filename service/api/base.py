"""Shared API pieces: the Blueprint with 400 validation errors, list envelopes, cursor args."""

from __future__ import annotations

from typing import Any, ClassVar

import flask_smorest
import marshmallow as ma
from flask import Request, current_app, g
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict
from werkzeug.routing import PathConverter

from service.core.auth import Principal


class Parser(FlaskParser):
    """Webargs parser with 400 on schema errors and a ``multipart`` location (form + files)."""

    # DESIGN §9: a body that fails the schema is a 400 invalid_request_error, not 422.
    DEFAULT_VALIDATION_STATUS = 400
    __location_map__ = dict(FlaskParser.__location_map__, multipart="load_multipart")  # noqa: RUF012

    def load_multipart(self, req: Request, schema: ma.Schema) -> Any:
        # OpenAI documents uploads as one multipart body holding both fields and the file.
        return self._makeproxy(CombinedMultiDict([req.form, req.files]), schema)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING: ClassVar[dict[str, str]] = dict(  # type: ignore[misc]
        flask_smorest.Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING, multipart="multipart/form-data"
    )


class StrictSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class ErrorBodySchema(ma.Schema):
    message = ma.fields.String(required=True)
    type = ma.fields.String(required=True)
    param = ma.fields.String(allow_none=True, required=True)
    code = ma.fields.String(allow_none=True, required=True)


class ErrorSchema(ma.Schema):
    """OpenAI's error envelope."""

    error = ma.fields.Nested(ErrorBodySchema, required=True)


class CursorArgsSchema(StrictSchema):
    after = ma.fields.String(
        metadata={"description": "Cursor: the id of the last item of the previous page."}
    )
    limit = ma.fields.Integer(
        load_default=20,
        validate=ma.validate.Range(min=1, max=100),
        metadata={"description": "Page size, 1-100."},
    )


class MetadataFilterArgsSchema(CursorArgsSchema):
    """Cursor args plus exact-match metadata filters in the SDK's ``metadata[key]=value`` syntax."""

    metadata = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        metadata={
            "description": "Exact-match filters, sent as `metadata[key]=value` (the SDK's syntax).",
            "style": "deepObject",
            "explode": True,
        },
    )

    @ma.pre_load
    def collect_metadata(self, data: Any, **_: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        found: dict[str, str] = {}
        for name in data:
            if name.startswith("metadata[") and name.endswith("]"):
                key = name[len("metadata[") : -1]
                if "[" in key or "]" in key:
                    raise ma.ValidationError(
                        {
                            "metadata": [
                                f"Invalid filter {name!r}: use metadata[key]=value; "
                                "nested keys are not supported."
                            ]
                        }
                    )
                found[key] = data[name]
            else:
                out[name] = data[name]
        if found:
            out["metadata"] = found
        return out


def list_schema(item: type[ma.Schema], name: str) -> type[ma.Schema]:
    """A ``{"object": "list", "data": [...], "has_more"}`` schema for ``item``."""
    return ma.Schema.from_dict(
        {
            "object": ma.fields.Constant("list", required=True),
            "data": ma.fields.List(ma.fields.Nested(item), required=True),
            "has_more": ma.fields.Boolean(required=True),
            "first_id": ma.fields.String(allow_none=True),
            "last_id": ma.fields.String(allow_none=True),
        },
        name=name,
    )


def list_body(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


def principal() -> Principal:
    """The authenticated caller of this request (set by the auth hook)."""
    return g.principal  # type: ignore[no-any-return]


def services() -> Any:
    """The application's wiring (settings, store, dispatcher), see service.app.Services."""
    return current_app.extensions["tuneline"]


def parameter_style(converter: Any, field: ma.fields.Field, **_: Any) -> dict[str, Any]:
    """apispec hook (bound to its converter): carry ``style``/``explode`` from field metadata."""
    return {k: field.metadata[k] for k in ("style", "explode") if k in field.metadata}


class ModelIdConverter(PathConverter):
    """A model id in a URL path: slashes allowed (``ft:org/name:…``), but not a trailing
    ``/content``, so ``/v1/models/{model}`` never also matches ``/v1/models/{model}/content``
    (an ``OPTIONS`` there would advertise the model's DELETE)."""

    regex = r"[^/](?:(?!/content$).)*"
