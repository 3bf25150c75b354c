"""The CLI's one client of the API: connection, error path, JSON output and width-aware tables.

Every command reaches the service through ``Connection`` (``TUNELINE_BASE_URL``, default
``http://127.0.0.1:8000``, and ``TUNELINE_API_KEY``); an error answer or an unreachable server
becomes one ``ApiError`` line on stderr and exit status 1; ``--json`` output goes through
``echo_json`` and human output through ``table``. ``httpx2`` is imported on first use, so the
offline commands (``prepare``, ``keys``) that share the output half never load it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import wcwidth

from service.core.errors import TunelineError

if TYPE_CHECKING:
    import httpx2

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 30.0
# A local model's answer may wait for the infer worker (TUNELINE_INFER_TIMEOUT_S, 120 s).
READ_TIMEOUT_S = 150.0


class ApiError(click.ClickException):
    """An error answer from the service (or none at all), as one line on stderr, exit status 1:
    ``HTTP <status> <type> (<code>; param <param>): <message>``."""

    def __init__(
        self, status: int, kind: str, code: str | None, message: str, param: str | None = None
    ) -> None:
        self.status, self.kind, self.code, self.param = status, kind, code, param
        detail = "; ".join([*([code] if code else []), *([f"param {param}"] if param else [])])
        where = f"HTTP {status} {kind}" if status else kind
        super().__init__(f"{where}{f' ({detail})' if detail else ''}: {message}")

    @classmethod
    def from_domain(cls, exc: TunelineError) -> ApiError:
        """The same line for an error the admin commands meet in the core, without HTTP."""
        return cls(0, exc.type, exc.code, exc.message, exc.param)

    @classmethod
    def from_response(cls, response: httpx2.Response) -> ApiError:
        response.read()
        try:
            error = response.json()["error"]
            return cls(
                response.status_code, error["type"], error.get("code"), error["message"], error.get("param")
            )
        except (ValueError, KeyError, TypeError):
            return cls(
                response.status_code, "http_error", None, response.text[:300] or response.reason_phrase
            )


@dataclass(frozen=True)
class Connection:
    """Where the service is and who we are."""

    base_url: str
    api_key: str

    @classmethod
    def from_env(cls) -> Connection:
        api_key = os.environ.get("TUNELINE_API_KEY") or ""
        if not api_key:
            raise click.UsageError("Set TUNELINE_API_KEY to a Tuneline API key (tuneline keys create).")
        return cls((os.environ.get("TUNELINE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"), api_key)

    @contextmanager
    def stream(
        self, method: str, path: str, read_timeout: float | None = READ_TIMEOUT_S, **kwargs: Any
    ) -> Iterator[httpx2.Response]:
        """A checked response whose body is read as it arrives (``read_timeout=None``: wait forever)."""
        import httpx2

        try:
            with (
                httpx2.Client(
                    base_url=self.base_url,
                    headers={"Authorization": f"Bearer {self.api_key}"},
                    timeout=httpx2.Timeout(CONNECT_TIMEOUT_S, read=read_timeout),
                ) as client,
                client.stream(method, path, **kwargs) as response,
            ):
                if response.status_code >= 400:
                    raise ApiError.from_response(response)
                yield response
        except httpx2.TransportError as exc:
            raise ApiError(
                0, "connection_error", None, f"cannot reach Tuneline at {self.base_url}: {exc}"
            ) from None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """One call, its body read; keyword arguments are httpx2's (``params``, ``json``, ``headers``)."""
        with self.stream(method, path, **kwargs) as response:
            response.read()
            return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call answered with JSON."""
        return self.request(method, path, **kwargs).json()


def connect() -> Connection:
    return Connection.from_env()


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Parse a server-sent event stream into (event name, data text); comments are skipped."""
    name, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def echo_json(value: Any) -> None:
    """``--json`` output: one compact JSON document per line (a stream is JSON lines)."""
    click.echo(json.dumps(value, ensure_ascii=False))


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal (East Asian wide characters take two)."""
    return int(wcwidth.width(text))


def clip(text: Any, columns: int) -> str:
    """``text`` on one line, cut to ``columns`` with an ellipsis when longer."""
    flat = " ".join(str(text).split())
    if width(flat) <= columns:
        return flat
    return wcwidth.clip(flat, 0, columns - 1).rstrip() + "…"


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return " ".join(str(value).split())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table (no box drawing); columns are measured in terminal cells."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([width(h), *(width(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(wcwidth.ljust(v, w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])
