"""The application factory: ``create_app(settings)`` wires Flask, flask-smorest and the core."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request
from flask_smorest import Api

from service import logs
from service.api import auth, errors, uploads
from service.api.base import ErrorSchema, ModelIdConverter, parameter_style
from service.api.ops import prometheus
from service.console import views as console_views
from service.core.backends.registry import Backends
from service.core.dispatch import Dispatcher
from service.core.secrets_box import SecretBox, box_for
from service.core.store import Store, keys
from service.core.store.tracked import TrackedReads
from service.settings import Settings
from service.taskqueue import CeleryDispatcher, make_celery

log = logging.getLogger("tuneline.http")


@dataclass
class Services:
    """What handlers need, built once per app: settings, the store and the task dispatcher."""

    settings: Settings
    store: Store
    dispatcher: Dispatcher
    box: SecretBox
    broker: Store  # the Celery broker's Redis (queue depths); the state store when they coincide
    backends: Backends  # provider name -> backend, each built once


class TunelineFlask(Flask):
    """Flask, with ``ensure_sync`` (which Flask invites apps to override) remembering its answer.

    Flask asks ``inspect.iscoroutinefunction`` about every hook, view and method view it calls, on
    every request (about ten times); the answer for a given function never changes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_functions: set[Any] = set()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        key = getattr(func, "__func__", func)  # a bound method (a MethodView's get): its function
        try:
            if key in self._plain_functions:
                return func
        except TypeError:  # an unhashable callable: ask every time
            return super().ensure_sync(func)
        synced = super().ensure_sync(func)
        if synced is func:
            if len(self._plain_functions) >= 10_000:  # functions made per request never pile up
                self._plain_functions.clear()
            self._plain_functions.add(key)
        return synced


class TunelineApi(Api):
    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = "DEFAULT_ERROR"

    def _register_error_handlers(self) -> None:
        errors.register(self._app)


API_DESCRIPTION = (
    "Tuneline: a self-hosted, provider-neutral fine-tuning job service. The Files and "
    "Fine-tuning routes mirror OpenAI's shapes, so the official `openai` SDK works as a client."
)


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> Flask:
    """Build the app; only here and in ``Settings.from_env`` is the environment read."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level)
    app = TunelineFlask("tuneline")
    app.config.update(
        API_TITLE="Tuneline",
        API_VERSION="0.1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": API_DESCRIPTION},
            "security": [{"bearerAuth": []}],
            "components": {
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A Tuneline API key (`tuneline keys create`).",
                    },
                }
            },
        },
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 1024 * 1024,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    if dispatcher is None:
        dispatcher = CeleryDispatcher(make_celery(settings))
    store = Store.from_url(settings.redis_url)
    if settings.read_cache_s > 0:
        # Job records (the route clients poll) and API keys (every request; a revoke is seen by
        # the next request of every process).
        prefixes = (keys.job_prefix(), keys.api_key_prefix())
        store.tracked = TrackedReads(store.r, prefixes, settings.read_cache_s)
    broker_url = settings.effective_broker_url
    app.extensions["tuneline"] = Services(
        settings=settings,
        store=store,
        dispatcher=dispatcher,
        box=box_for(settings.secret_key, settings.env),
        broker=store if broker_url == settings.redis_url else Store.from_url(broker_url),
        backends=Backends(settings, store, dispatcher),
    )
    app.url_map.converters["model_id"] = ModelIdConverter
    api = TunelineApi(app)
    api.ma_plugin.converter.add_parameter_attribute_function(parameter_style)
    _register_request_log(app)  # first: a request refused by a later hook (401) still gets its id
    uploads.register(app)
    auth.register(app)
    prometheus.register(app)
    _register_blueprints(api)
    app.register_blueprint(console_views.bp)  # plain Flask: static pages stay out of the OpenAPI spec
    return app


def _register_blueprints(api: Api) -> None:
    from service.api.completions.resources import blp as completions_blp
    from service.api.experiments.resources import blp as experiments_blp
    from service.api.files.resources import blp as files_blp
    from service.api.graders.resources import blp as graders_blp
    from service.api.health.resources import blp as health_blp
    from service.api.imports.resources import blp as imports_blp
    from service.api.jobs.resources import blp as jobs_blp
    from service.api.models.resources import blp as models_blp
    from service.api.ops.resources import blp as ops_blp
    from service.api.webhooks.resources import blp as webhooks_blp
    from service.sandbox.resources import blp as sandbox_blp

    for blp in (
        health_blp,
        files_blp,
        jobs_blp,
        graders_blp,
        models_blp,
        completions_blp,
        experiments_blp,
        imports_blp,
        ops_blp,
        webhooks_blp,
        sandbox_blp,
    ):
        api.register_blueprint(blp)


def _register_request_log(app: Flask) -> None:
    # Each hook reads the request and ``g`` through one proxy lookup each: these run on every
    # request, and every lookup through Flask's context-local proxies costs a context-var read.
    @app.before_request
    def start() -> None:
        state = g._get_current_object()  # type: ignore[attr-defined]
        state.request_id = request.environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
        state.started = time.monotonic()

    @app.after_request
    def finish(response: Any) -> Any:
        state = g._get_current_object()  # type: ignore[attr-defined]
        req = request._get_current_object()  # type: ignore[attr-defined]
        request_id = getattr(state, "request_id", None)
        response.headers["X-Request-Id"] = "" if request_id is None else request_id
        principal = getattr(state, "principal", None)
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": req.method,
                "path": req.path,
                "status": response.status_code,
                "ms": logs.monotonic_ms(getattr(state, "started", time.monotonic())),
                "tenant": principal.tenant if principal else None,
            },
        )
        return response
