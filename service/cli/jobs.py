"""``tuneline jobs``: create, list, get, follow, cancel and read metrics of fine-tuning jobs over HTTP.

Reads ``TUNELINE_BASE_URL`` (default ``http://127.0.0.1:8000``) and ``TUNELINE_API_KEY``. The
OpenAI-shaped routes go through the official ``openai`` SDK (the same client callers use);
Tuneline's extensions (the event stream, metrics CSV/PNG) through ``httpx2``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import click
import httpx2
import openai
from openai import OpenAI

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled")
METRIC_TABLE = ("step", "train_loss", "valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy")
FOLLOW_RECONNECTS = 5

F = TypeVar("F", bound=Callable[..., Any])


class Remote:
    """Where the service is and who we are, from the environment (read once per command)."""

    def __init__(self) -> None:
        self.base_url = (os.environ.get("TUNELINE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = os.environ.get("TUNELINE_API_KEY") or ""
        if not self.api_key:
            raise click.UsageError("Set TUNELINE_API_KEY to a Tuneline API key (tuneline keys create).")

    def sdk(self) -> OpenAI:
        return OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key, max_retries=2, timeout=30)

    def http(self, timeout: float | None = 30.0) -> httpx2.Client:
        return httpx2.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=httpx2.Timeout(30.0, read=timeout),
        )

    def get(self, path: str, **params: Any) -> httpx2.Response:
        with self.http() as client:
            return _checked(client.get(path, params=params))


def _checked(response: httpx2.Response) -> httpx2.Response:
    if response.status_code >= 400:
        response.read()
        try:
            error = response.json()["error"]
            detail = f"{error['type']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:300]
        raise click.ClickException(f"HTTP {response.status_code} {detail}")
    return response


def _api_errors(fn: F) -> F:
    """Turn the SDK's and httpx2's exceptions into one-line messages (exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error", body) if isinstance(body, dict) else {}
            message = error.get("message") if isinstance(error, dict) else None
            raise click.ClickException(f"HTTP {exc.status_code} {message or exc.message}") from None
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            base = os.environ.get("TUNELINE_BASE_URL") or DEFAULT_BASE_URL
            raise click.ClickException(f"cannot reach Tuneline at {base}: {exc}") from None

    return wrapper  # type: ignore[return-value]


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=None))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key] = value
    return out


def _job_dict(job: Any) -> dict[str, Any]:
    return job.to_dict() if hasattr(job, "to_dict") else dict(job)


def _show(job: Any, as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    found = _job_dict(job)
    if as_json:
        _echo_json(found)
    else:
        human(found)


def _describe(job: dict[str, Any]) -> None:
    for name in (
        "id",
        "status",
        "stage",
        "provider",
        "model",
        "fine_tuned_model",
        "tenant",
        "training_file",
        "validation_file",
        "created_at",
        "finished_at",
        "trained_tokens",
        "result_files",
    ):
        if job.get(name) not in (None, [], ""):
            click.echo(f"{name + ':':<18}{job[name]}")
    if job.get("error"):
        click.echo(f"{'error:':<18}{job['error'].get('code')}: {job['error'].get('message')}")


@click.group()
def jobs() -> None:
    """Fine-tuning jobs over HTTP (TUNELINE_BASE_URL, TUNELINE_API_KEY)."""


@jobs.command("create")
@click.option("--model", required=True, help="Base model, e.g. gpt-4o-mini-2024-07-18.")
@click.option("--training-file", required=True, help="A processed file id (file-...).")
@click.option("--validation-file", default=None, help="A processed file id for validation.")
@click.option("--provider", default=None, help="openai, azure, sandbox or local (default: the server's).")
@click.option("--suffix", default=None, help="Added to the fine-tuned model name.")
@click.option("--seed", type=int, default=None)
@click.option("--n-epochs", type=int, default=None)
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--webhook-url", default=None, help="Where to POST signed job events.")
@click.option("--webhook-event", "webhook_events", multiple=True, help="Event type to send (repeatable).")
@click.option("--max-cost-usd", type=float, default=None, help="Refuse the job if it would cost more.")
@click.option("--idempotency-key", default=None, help="Make retries of this create safe.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@_api_errors
def create(
    model: str,
    training_file: str,
    validation_file: str | None,
    provider: str | None,
    suffix: str | None,
    seed: int | None,
    n_epochs: int | None,
    metadata: tuple[str, ...],
    webhook_url: str | None,
    webhook_events: tuple[str, ...],
    max_cost_usd: float | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Create a fine-tuning job."""
    extra: dict[str, Any] = {}
    if provider:
        extra["provider"] = provider
    if webhook_url:
        extra["webhook"] = {
            "url": webhook_url,
            **({"events": list(webhook_events)} if webhook_events else {}),
        }
    elif webhook_events:
        raise click.BadParameter("needs --webhook-url", param_hint="--webhook-event")
    if max_cost_usd is not None:
        extra["max_cost_usd"] = max_cost_usd
    kwargs: dict[str, Any] = {"model": model, "training_file": training_file, "extra_body": extra}
    if validation_file:
        kwargs["validation_file"] = validation_file
    if suffix:
        kwargs["suffix"] = suffix
    if seed is not None:
        kwargs["seed"] = seed
    if n_epochs is not None:
        kwargs["hyperparameters"] = {"n_epochs": n_epochs}
    if metadata:
        kwargs["metadata"] = _pairs(metadata, "--metadata")
    if idempotency_key:
        kwargs["extra_headers"] = {"Idempotency-Key": idempotency_key}
    job = _job_dict(Remote().sdk().fine_tuning.jobs.create(**kwargs))
    if as_json:
        _echo_json(job)
        return
    click.echo(f"Created {job['id']} ({job['status']}, provider {job.get('provider')}).")
    click.echo(f"Follow it: tuneline jobs follow {job['id']}")


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", default=None, help="Cursor: the last job id of the previous page.")
@click.option("--status", default=None, help="Only jobs with this status.")
@click.option("--provider", default=None, help="Only jobs on this provider.")
@click.option("--tenant", default=None, help="Ops keys: only this tenant's jobs.")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="Exact-match filter.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@_api_errors
def list_(
    limit: int,
    after: str | None,
    status: str | None,
    provider: str | None,
    tenant: str | None,
    metadata: tuple[str, ...],
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    query = {k: v for k, v in (("status", status), ("provider", provider), ("tenant", tenant)) if v}
    kwargs: dict[str, Any] = {"limit": limit, "extra_query": query}
    if after:
        kwargs["after"] = after
    if metadata:
        kwargs["metadata"] = _pairs(metadata, "--metadata")
    page = Remote().sdk().fine_tuning.jobs.list(**kwargs)
    found = [_job_dict(j) for j in page.data]
    if as_json:
        _echo_json({"object": "list", "data": found, "has_more": page.has_more})
        return
    _table(found, ("id", "status", "stage", "provider", "model", "tenant", "created_at"))
    if page.has_more and found:
        click.echo(f"(more: --after {found[-1]['id']})")


@jobs.command("get")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@_api_errors
def get(job_id: str, as_json: bool) -> None:
    """Show one job."""
    _show(Remote().sdk().fine_tuning.jobs.retrieve(job_id), as_json, _describe)


@jobs.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@_api_errors
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job in any non-terminal stage."""
    _show(
        Remote().sdk().fine_tuning.jobs.cancel(job_id),
        as_json,
        lambda job: click.echo(f"{job['id']} is {job['status']}."),
    )


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse a server-sent event stream into (event name, JSON data); comments are skipped."""
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
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


def _stream(remote: Remote, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The job's events, reconnecting when the stream breaks (the server replays from the start)."""
    for attempt in range(FOLLOW_RECONNECTS + 1):
        try:
            with (
                remote.http(timeout=None) as client,
                client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}) as r,
            ):
                _checked(r)
                for item in sse_events(r.iter_lines()):
                    yield item
                    if item[0] == "done":
                        return
        except httpx2.TransportError:
            if attempt == FOLLOW_RECONNECTS:
                raise
    raise click.ClickException("the event stream ended before the job did")


@jobs.command("follow")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (no progress bar).")
@_api_errors
def follow(job_id: str, as_json: bool) -> None:
    """Stream a job's events live with a progress bar; exit 0 when it succeeds, 1 otherwise."""
    from tqdm import tqdm

    remote = Remote()
    seen: set[str] = set()
    status = None
    bar = None if as_json else tqdm(total=None, unit="step", desc=job_id, file=sys.stderr, disable=None)
    try:
        for name, data in _stream(remote, job_id):
            if name == "done":
                status = data.get("status")
                if as_json:
                    _echo_json({"object": "follow.done", "status": status})
                break
            if data.get("id") in seen:
                continue
            seen.add(data.get("id", ""))
            if as_json:
                _echo_json(data)
                continue
            assert bar is not None
            step, total = (data.get("data") or {}).get("step"), (data.get("data") or {}).get("total_steps")
            if data.get("type") == "metrics" and isinstance(step, int):
                if isinstance(total, int) and bar.total != total:
                    bar.total = total
                bar.update(step - bar.n)
            bar.write(f"[{data.get('level', 'info')}] {data.get('message', '')}")
    finally:
        if bar is not None:
            bar.close()
    if not as_json:
        click.echo(f"{job_id} {status}")
    click.get_current_context().exit(0 if status == "succeeded" else 1)


@jobs.command("metrics")
@click.argument("job_id")
@click.option("--csv", "as_csv", is_flag=True, help="Print OpenAI's result-file CSV.")
@click.option(
    "--png", "png_path", type=click.Path(dir_okay=False, writable=True), help="Save the loss curve."
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@_api_errors
def metrics(job_id: str, as_csv: bool, png_path: str | None, as_json: bool) -> None:
    """Per-step training metrics as a table (or CSV, JSON; --png saves the loss curve)."""
    remote = Remote()
    path = f"/v1/fine_tuning/jobs/{job_id}/metrics"
    if png_path:
        image = remote.get(path, format="png").content
        with open(png_path, "wb") as fh:
            fh.write(image)
        click.echo(f"Saved the loss curve to {png_path} ({len(image)} bytes).", err=True)
        if not (as_csv or as_json):
            return
    if as_csv:
        click.echo(remote.get(path, format="csv").text, nl=False)
        return
    body = remote.get(path).json()
    if as_json:
        _echo_json(body)
    elif not body["data"]:
        click.echo("No metrics yet.")
    else:
        _table(body["data"], METRIC_TABLE)
