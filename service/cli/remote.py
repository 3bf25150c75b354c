"""The HTTP side of the CLI: ``TUNELINE_BASE_URL`` and ``TUNELINE_API_KEY``, JSON in and out."""

from __future__ import annotations

import os
import unicodedata
from typing import Any

import click
import httpx2
import openai

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 120.0


def _config() -> tuple[str, str]:
    key = os.environ.get("TUNELINE_API_KEY", "")
    if not key:
        raise click.UsageError("Set TUNELINE_API_KEY (create one with `tuneline keys create`).")
    return os.environ.get("TUNELINE_BASE_URL", DEFAULT_BASE_URL).rstrip("/"), key


def sdk() -> openai.OpenAI:
    """The official SDK pointed at Tuneline."""
    base, key = _config()
    return openai.OpenAI(base_url=base + "/v1", api_key=key, timeout=TIMEOUT_S, max_retries=2)


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One API call; an error answer becomes a ClickException with the server's message."""
    base, key = _config()
    try:
        response = httpx2.request(
            method, base + path, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S, **kwargs
        )
    except httpx2.HTTPError as exc:
        raise click.ClickException(f"cannot reach Tuneline at {base}: {exc}") from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error['message']} ({error['type']}" + (
                f", param {error['param']})" if error.get("param") else ")"
            )
        except (ValueError, KeyError, TypeError):
            detail = response.text[:500]
        raise click.ClickException(f"HTTP {response.status_code}: {detail}")
    return response.json()


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
