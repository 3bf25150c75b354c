"""``tuneline jobs``: create, list, get, follow, cancel, pause, resume and read metrics of fine-tuning
jobs over HTTP."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from service.cli.client import ApiError, Connection, connect, echo_json, sse_events, table

TERMINAL = ("succeeded", "failed", "cancelled")
METRIC_TABLE = ("step", "train_loss", "valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy")
FOLLOW_RECONNECTS = 5
JOBS = "/v1/fine_tuning/jobs"
METHODS = ("supervised", "dpo")  # OpenAI's method.type values
DPO_METRIC_TABLE = ("step", "train_loss", "valid_loss", "train_reward_margin", "train_preference_accuracy")


def _rows(found: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    return table([c.upper() for c in columns], [[row.get(c) for c in columns] for row in found])


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key] = value
    return out


def _show(job: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        echo_json(job)
    else:
        human(job)


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
        "seed",
        "created_at",
        "finished_at",
        "trained_tokens",
        "result_files",
    ):
        if job.get(name) not in (None, [], ""):
            click.echo(f"{name + ':':<18}{job[name]}")
    if job.get("method"):
        click.echo(f"{'method:':<18}{job['method'].get('type')}")
    for item in job.get("integrations") or []:
        click.echo(f"{'integration:':<18}{item.get('type')} {json.dumps(item.get(item.get('type')) or {})}")
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
@click.option("--seed", type=int, default=None, help="Default: the server picks one (the job says which).")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="Training method; its hyperparameters go in method.<type>.hyperparameters.",
)
@click.option("--n-epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--learning-rate-multiplier", type=float, default=None)
@click.option("--beta", type=float, default=None, help="DPO: how far the model may move from its base.")
@click.option("--wandb-project", default=None, help="Log the training to this W&B project.")
@click.option(
    "--mlflow-experiment", default=None, help="Log the training to this MLflow experiment (local provider)."
)
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--webhook-url", default=None, help="Where to POST signed job events.")
@click.option("--webhook-event", "webhook_events", multiple=True, help="Event type to send (repeatable).")
@click.option("--max-cost-usd", type=float, default=None, help="Refuse the job if it would cost more.")
@click.option("--idempotency-key", default=None, help="Make retries of this create safe.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def create(
    model: str,
    training_file: str,
    validation_file: str | None,
    provider: str | None,
    suffix: str | None,
    seed: int | None,
    method: str | None,
    n_epochs: int | None,
    batch_size: int | None,
    learning_rate_multiplier: float | None,
    beta: float | None,
    wandb_project: str | None,
    mlflow_experiment: str | None,
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
    body: dict[str, Any] = {"model": model, "training_file": training_file, **extra}
    if validation_file:
        body["validation_file"] = validation_file
    if suffix:
        body["suffix"] = suffix
    if seed is not None:
        body["seed"] = seed
    knobs = {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": learning_rate_multiplier,
        "beta": beta,
    }
    hyper = {k: v for k, v in knobs.items() if v is not None}
    if beta is not None and method != "dpo":
        raise click.BadParameter("applies to --method dpo only", param_hint="--beta")
    if method:
        body["method"] = {"type": method, method: {"hyperparameters": hyper}}
    elif hyper:
        body["hyperparameters"] = hyper
    integrations = []
    if wandb_project:
        integrations.append({"type": "wandb", "wandb": {"project": wandb_project}})
    if mlflow_experiment:
        integrations.append({"type": "mlflow", "mlflow": {"experiment_name": mlflow_experiment}})
    if integrations:
        body["integrations"] = integrations
    if metadata:
        body["metadata"] = _pairs(metadata, "--metadata")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = connect().call("POST", JOBS, json=body, headers=headers)
    if as_json:
        echo_json(job)
        return
    click.echo(
        f"Created {job['id']} ({job['status']}, provider {job.get('provider')}, seed {job.get('seed')})."
    )
    click.echo(f"Follow it: tuneline jobs follow {job['id']}")


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", default=None, help="Cursor: the last job id of the previous page.")
@click.option("--status", default=None, help="Only jobs with this status.")
@click.option("--provider", default=None, help="Only jobs on this provider.")
@click.option("--tenant", default=None, help="Ops keys: only this tenant's jobs.")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="Exact-match filter.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
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
    query: dict[str, Any] = {"limit": limit}
    query.update((k, v) for k, v in (("after", after), ("status", status), ("provider", provider)) if v)
    if tenant:
        query["tenant"] = tenant
    query.update((f"metadata[{k}]", v) for k, v in _pairs(metadata, "--metadata").items())
    page = connect().call("GET", JOBS, params=query)
    found = page["data"]
    if as_json:
        echo_json({"object": "list", "data": found, "has_more": page["has_more"]})
        return
    click.echo(_rows(found, ("id", "status", "stage", "provider", "model", "tenant", "created_at")))
    if page["has_more"] and found:
        click.echo(f"(more: --after {found[-1]['id']})")


@jobs.command("get")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def get(job_id: str, as_json: bool) -> None:
    """Show one job."""
    _show(connect().call("GET", f"{JOBS}/{job_id}"), as_json, _describe)


@jobs.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job in any non-terminal stage."""
    _show(
        connect().call("POST", f"{JOBS}/{job_id}/cancel"),
        as_json,
        lambda job: click.echo(f"{job['id']} is {job['status']}."),
    )


@jobs.command("pause")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def pause(job_id: str, as_json: bool) -> None:
    """Pause a training job; it keeps its checkpoint until resumed."""
    _show(connect().call("POST", f"{JOBS}/{job_id}/pause"), as_json, _state_line)


@jobs.command("resume")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def resume(job_id: str, as_json: bool) -> None:
    """Resume a paused job from where it paused."""
    _show(connect().call("POST", f"{JOBS}/{job_id}/resume"), as_json, _state_line)


def _state_line(job: dict[str, Any]) -> None:
    click.echo(f"{job['id']} is {job['status']} ({job['stage']}).")


def _stream(conn: Connection, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The job's events, reconnecting when the stream breaks (the server replays from the start)."""
    for attempt in range(FOLLOW_RECONNECTS + 1):
        try:
            with conn.stream(
                "GET", f"{JOBS}/{job_id}/events", read_timeout=None, params={"stream": "true"}
            ) as r:
                for name, data in sse_events(r.iter_lines()):
                    yield name, json.loads(data)
                    if name == "done":
                        return
        except ApiError as exc:
            if exc.status or attempt == FOLLOW_RECONNECTS:  # an answer, not a broken connection
                raise
    raise click.ClickException("the event stream ended before the job did")


@jobs.command("follow")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines (no progress bar).")
def follow(job_id: str, as_json: bool) -> None:
    """Stream a job's events live with a progress bar; exit 0 when it succeeds, 1 otherwise."""
    from tqdm import tqdm

    conn = connect()
    seen: set[str] = set()
    status = None
    bar = None if as_json else tqdm(total=None, unit="step", desc=job_id, file=sys.stderr, disable=None)
    try:
        for name, data in _stream(conn, job_id):
            if name == "done":
                status = data.get("status")
                if as_json:
                    echo_json({"object": "follow.done", "status": status})
                break
            if data.get("id") in seen:
                continue
            seen.add(data.get("id", ""))
            if as_json:
                echo_json(data)
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
def metrics(job_id: str, as_csv: bool, png_path: str | None, as_json: bool) -> None:
    """Per-step training metrics as a table (or CSV, JSON; --png saves the loss curve)."""
    conn = connect()
    path = f"{JOBS}/{job_id}/metrics"
    if png_path:
        image = conn.request("GET", path, params={"format": "png"}).content
        with open(png_path, "wb") as fh:
            fh.write(image)
        click.echo(f"Saved the loss curve to {png_path} ({len(image)} bytes).", err=True)
        if not (as_csv or as_json):
            return
    if as_csv:
        click.echo(conn.request("GET", path, params={"format": "csv"}).text, nl=False)
        return
    body = conn.call("GET", path)
    if as_json:
        echo_json(body)
    elif not body["data"]:
        click.echo("No metrics yet.")
    else:
        dpo = any("train_reward_margin" in row for row in body["data"])  # a DPO job's columns
        click.echo(_rows(body["data"], DPO_METRIC_TABLE if dpo else METRIC_TABLE))
