"""The HTTP side of the CLI: ``TUNELINE_BASE_URL`` and ``TUNELINE_API_KEY``, JSON in and out."""

from __future__ import annotations

import unicodedata
from typing import Any

import click
import httpx2
import openai

# The connection settings and error rendering are the jobs commands' (one place for both).
from service.cli.jobs import DEFAULT_BASE_URL, Remote, _checked

TIMEOUT_S = 150.0  # a local model's answer may wait for the infer worker (TUNELINE_INFER_TIMEOUT_S)


def sdk() -> openai.OpenAI:
    """The official SDK pointed at Tuneline."""
    return Remote().sdk().with_options(timeout=TIMEOUT_S)


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One API call; an error answer becomes a ClickException with the server's message."""
    remote = Remote()
    try:
        with remote.http(timeout=TIMEOUT_S) as client:
            return _checked(client.request(method, path, **kwargs)).json()
    except httpx2.TransportError as exc:
        raise click.ClickException(
            f"cannot reach Tuneline at {remote.base_url or DEFAULT_BASE_URL}: {exc}"
        ) from None


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def clip(text: str, columns: int) -> str:
    text = " ".join(str(text).split())
    if width(text) <= columns:
        return text
    out, used = "", 0
    for ch in text:
        w = width(ch)
        if used + w > columns - 1:
            break
        out, used = out + ch, used + w
    return out + "…"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned table (no box drawing), CJK-aware."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([width(h)] + [width(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v + " " * (w - width(v)) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])
