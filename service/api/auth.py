"""Bearer-key authentication for every data route; DESIGN §3 lists the public exceptions."""

from __future__ import annotations

from flask import Flask, g, request

from service.core import auth
from service.core.errors import AuthenticationFailed

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/openapi.json", "/console", "/sandbox/v1/", "/metrics")
# A public path is one of these exactly, or lies under one of them (checked on every request).
_PUBLIC_EXACT = frozenset({"/", "/favicon.ico", *PUBLIC_PREFIXES})
_PUBLIC_UNDER = tuple(p.rstrip("/") + "/" for p in PUBLIC_PREFIXES)


def _is_public(path: str) -> bool:
    return path in _PUBLIC_EXACT or path.startswith(_PUBLIC_UNDER)


def bearer(header: str | None = None) -> str | None:
    """The bearer token of this request (or of ``header``, the Authorization header's value)."""
    if header is None:
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
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        if req.method == "OPTIONS" or _is_public(req.path):
            return
        token = bearer(req.environ.get("HTTP_AUTHORIZATION", ""))
        g.principal = auth.authenticate(services.store, token, cache)
