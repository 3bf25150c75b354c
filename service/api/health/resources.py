"""``/healthz`` (process alive) and ``/readyz`` (Redis and broker reachable)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView

from service.api.base import Blueprint, services
from service.core.store.base import connect

blp = Blueprint("health", __name__, description="Probes (no API key needed).")


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.doc(security=[])
    def get(self) -> Any:
        """Liveness: the process answers."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A dependency is unreachable.")
    @blp.doc(security=[])
    def get(self) -> Any:
        """Readiness: Redis (state) and the broker answer."""
        svc = services()
        checks = {"redis": "ok" if svc.store.ping() else "unreachable"}
        broker = svc.settings.effective_broker_url
        if broker == svc.settings.redis_url:
            checks["broker"] = checks["redis"]
        else:
            try:
                checks["broker"] = "ok" if connect(broker).ping() else "unreachable"
            except Exception:
                checks["broker"] = "unreachable"
        ok = all(v == "ok" for v in checks.values())
        return {"status": "ok" if ok else "unavailable", "checks": checks}, (200 if ok else 503)
