"""A plain Flask blueprint serving the console's static files (kept out of the OpenAPI spec)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, send_from_directory

STATIC = Path(__file__).resolve().parent / "static"

# The page talks only to this origin and never runs inline code; the key lives in sessionStorage,
# so a strict policy is what keeps a hostile string in a job or dataset from reading it.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

bp = Blueprint("console", __name__, url_prefix="/console")


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Revalidate every time (ETag/Last-Modified make that cheap) so an upgrade is seen at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("")
def root() -> Response:
    return redirect("/console/", code=308)  # type: ignore[return-value]


@bp.get("/")
def index() -> Response:
    return _secure(send_from_directory(STATIC, "index.html", mimetype="text/html"))


@bp.get("/<path:name>")
def asset(name: str) -> Response:
    """A static asset; 404 for anything else (routes inside the page live after ``#``)."""
    return _secure(send_from_directory(STATIC, name))
