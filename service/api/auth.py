"""Bearer-key authentication for every data route; DESIGN §3 lists the public exceptions."""

from __future__ import annotations

from flask import Flask, g, request

from service.core import auth
from service.core.errors import AuthenticationFailed

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/openapi.json", "/console", "/sandbox/v1/", "/metrics")


def _is_public(path: str) -> bool:
    return path in ("/", "/favicon.ico") or any(
        path == p or path.startswith(p.rstrip("/") + "/") for p in PUBLIC_PREFIXES
    )


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        if header:
            raise AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_api_key"
            )
        return None
    return token.strip()


KEY_CACHE = "tuneline.key_cache"


def register(app: Flask) -> None:
    """The one authentication hook: every non-public route gets ``g.principal`` or a 401."""
    services = app.extensions["tuneline"]
    # Per process (each gunicorn worker builds its own app); staleness bounded by the setting.
    cache = app.extensions[KEY_CACHE] = auth.KeyCache(services.settings.auth_cache_s)

    @app.before_request
    def authenticate() -> None:
        if request.method == "OPTIONS" or _is_public(request.path):
            return
        g.principal = auth.authenticate(services.store, bearer(), cache)
