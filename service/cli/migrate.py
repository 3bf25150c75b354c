"""``tuneline migrate openai``: import an OpenAI account's fine-tuning history, then re-train it
(and, opt-in, distill its original models' answers into new training files).

The account key comes from ``TUNELINE_OPENAI_API_KEY`` or ``OPENAI_API_KEY`` when one is set
(sent with the import only, never printed), else the server uses its configured provider.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from service.cli.client import ApiError, Connection, clip, connect, echo_json, table
from service.cli.evaluate import parse_candidate

POLL_S = 1.0
IMPORT_WAIT_S = 6 * 3600.0  # a large account; Ctrl-C leaves the import running on the server
FILES_WAIT_S = 900.0  # the imported files' preparation reports, which re-training needs
KEY_VARIABLES = ("TUNELINE_OPENAI_API_KEY", "OPENAI_API_KEY")
# Why the original models cannot be evaluated here (the server lacks that account's provider).
ORIGINAL_REFUSED = ("provider_not_configured", "original_model_not_served")


@click.group()
def migrate() -> None:
    """Move a provider account's fine-tuning history into Tuneline and re-train it on open models."""


def _since(value: str | None) -> int | str | None:
    """Unix seconds or an ISO 8601 date, as the API takes them."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _progress_line(doc: dict[str, Any]) -> str:
    p = doc["progress"]
    return (
        f"import {doc['id']} {doc['status']}: {p['jobs_seen']} jobs seen, {p['jobs_imported']} imported, "
        f"{p['jobs_already_imported']} already imported, {p['jobs_skipped']} skipped; "
        f"{p['files_imported']} files imported, {p['files_reused']} reused"
    )


def _follow(conn: Connection, doc: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Poll the import until it ends: a progress bar on a terminal, plain lines otherwise."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="job", desc="import", file=sys.stderr, disable=True if quiet else None)
    shown = ""
    deadline = time.monotonic() + IMPORT_WAIT_S
    try:
        while True:
            line = _progress_line(doc)
            if bar.disable:
                if not quiet and line != shown:
                    click.echo(line, err=True)
            else:
                p = doc["progress"]
                bar.update(p["jobs_seen"] - bar.n)
                bar.set_postfix(
                    imported=p["jobs_imported"], skipped=p["jobs_skipped"], files=p["files_imported"]
                )
            shown = line
            if doc["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
                return doc
            time.sleep(POLL_S)
            doc = conn.call("GET", f"/v1/imports/{doc['id']}")
    finally:
        bar.close()


def _retry_while_files_prepare(call: Callable[[], Any], quiet: bool) -> Any:
    """Re-training needs the imported files' preparation: wait for it while the server says so."""
    deadline = time.monotonic() + FILES_WAIT_S
    told = False
    while True:
        try:
            return call()
        except ApiError as exc:
            if exc.code != "file_not_ready" or time.monotonic() > deadline:
                raise
            if not told and not quiet:
                click.echo("waiting for the imported files to be prepared ...", err=True)
                told = True
            time.sleep(POLL_S)


def _retrain(
    conn: Connection, import_id: str, body: dict[str, Any], quiet: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """The re-training; without the original models when the server cannot serve them (said so)."""
    path = f"/v1/imports/{import_id}/retrain"
    warnings: list[str] = []
    try:
        result = _retry_while_files_prepare(lambda: conn.call("POST", path, json=body), quiet)
    except ApiError as exc:
        if exc.code == "no_retrainable_jobs":
            return None, [f"nothing was re-trained: {exc.args[0]}"]
        if exc.param != "include_original" or exc.code not in ORIGINAL_REFUSED:
            raise
        warnings.append(f"original models not evaluated: {exc.args[0]}")
        result = _retry_while_files_prepare(
            lambda: conn.call("POST", path, json={**body, "include_original": False}), quiet
        )
    return result, warnings


def _distill(conn: Connection, import_id: str, max_cost_usd: float, quiet: bool) -> dict[str, Any]:
    """Start the distillation and follow it to its end (plain lines on stderr unless quiet)."""
    started = _retry_while_files_prepare(
        lambda: conn.call("POST", f"/v1/imports/{import_id}/distill", json={"max_cost_usd": max_cost_usd}),
        quiet,
    )
    state = {k: v for k, v in started.items() if k not in ("object", "import_id")}
    shown = ""
    deadline = time.monotonic() + IMPORT_WAIT_S
    while True:
        answered = sum(j["answered"] for j in state["jobs"])
        prompts = sum(j["prompts"] for j in state["jobs"])
        line = f"distill {state['status']}: {answered}/{prompts} answers, ${state['spent_usd']:.4f} spent"
        if not quiet and line != shown:
            click.echo(line, err=True)
        shown = line
        if state["status"] in ("succeeded", "stopped", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(POLL_S)
        state = conn.call("GET", f"/v1/imports/{import_id}")["distill"]


def _summary(
    doc: dict[str, Any],
    retrained: dict[str, Any] | None,
    distilled: dict[str, Any] | None,
    warnings: list[str],
) -> str:
    p = doc["progress"]
    lines = [
        f"Import {doc['id']} from {doc['source']}: {doc['status']}"
        + (f" ({doc['error']['message']})" if doc.get("error") else ""),
        table(
            ["", "imported", "already imported", "skipped"],
            [
                ["jobs", p["jobs_imported"], p["jobs_already_imported"], p["jobs_skipped"]],
                ["files", p["files_imported"], p["files_reused"], ""],
            ],
        ),
        "(files 'already imported': the same content was already in Tuneline, reused, not copied again)",
    ]
    if doc.get("skipped"):
        lines += [
            "",
            "Skipped:",
            table(
                ["job", "code", "why"],
                [[s.get("job") or "", s["code"], clip(s["message"], 80)] for s in doc["skipped"]],
            ),
        ]
    if retrained is not None:
        lines += ["", f"Re-training: {len(retrained['data'])} experiments"]
        if retrained["data"]:
            lines.append(
                table(
                    ["job", "original model", "test set", "experiment"],
                    [
                        [
                            d["provider_job_id"],
                            clip(d["fine_tuned_model"] or "", 48),
                            d["test_set"],
                            d["experiment_id"],
                        ]
                        for d in retrained["data"]
                    ],
                )
            )
        for s in retrained["skipped"]:
            lines.append(f"not re-trained: {s['provider_job_id']} ({s['code']}): {s['message']}")
        if retrained["data"]:
            lines.append("Compare them with: tuneline experiments get <experiment>")
    if distilled is not None:
        lines += [
            "",
            f"Distillation: {distilled['status']}, ${distilled['spent_usd']:.4f} spent of "
            f"${distilled['max_cost_usd']:.2f}"
            + (f" ({distilled['error']['message']})" if distilled.get("error") else ""),
            table(
                ["job", "answers", "errors", "new training file"],
                [
                    [
                        j["provider_job_id"],
                        f"{j['answered']}/{j['prompts']}",
                        j["errors"],
                        (j["file_id"] or "") + (" (partial)" if j.get("complete") is False else ""),
                    ]
                    for j in distilled["jobs"]
                ],
            ),
        ]
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


@migrate.command("openai")
@click.option(
    "--since", default=None, help="Only jobs created on or after this date (2026-06-01) or Unix time."
)
@click.option(
    "--base-url",
    default=None,
    help="The account's API URL (default: OpenAI's, or the server's configured one).",
)
@click.option(
    "--retrain",
    "candidates",
    multiple=True,
    help="Re-train every imported job on PROVIDER:MODEL[:key=value,...] (e.g. local:smollm2-135m), "
    "repeatable; the original model is evaluated beside it.",
)
@click.option(
    "--test-split",
    type=click.FloatRange(0.0, 0.5, min_open=True),
    default=0.1,
    show_default=True,
    help="Held out of the training file when a job has no validation file.",
)
@click.option(
    "--distill",
    is_flag=True,
    help="Also have each original model answer its training prompts, as new training files (opt-in; "
    "needs --max-cost-usd).",
)
@click.option(
    "--max-cost-usd",
    type=click.FloatRange(0.0, min_open=True),
    default=None,
    help="What --distill may spend on the original models' answers.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the import (and what followed) as one JSON document."
)
def openai_(
    since: str | None,
    base_url: str | None,
    candidates: tuple[str, ...],
    test_split: float,
    distill: bool,
    max_cost_usd: float | None,
    as_json: bool,
) -> None:
    """Import your OpenAI fine-tuning jobs, files and metrics; with --retrain, re-train each job on
    open models beside its original model; with --distill, turn the original models' answers into
    new training files.

    The key is TUNELINE_OPENAI_API_KEY or OPENAI_API_KEY (sent with the import only, never
    printed); without one, the server's configured OpenAI provider is used.
    """
    if distill and max_cost_usd is None:
        raise click.UsageError("--distill needs --max-cost-usd (what the original models' answers may cost).")
    retrain_body = {
        "candidates": [parse_candidate(c, "--retrain") for c in candidates],
        "split": {"test": test_split},
    }
    conn = connect()
    body: dict[str, Any] = {"source": "openai"}
    api_key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
    if api_key:
        body["api_key"] = api_key
    if base_url:
        body["base_url"] = base_url
    if since is not None:
        body["since"] = _since(since)
    doc = _follow(conn, conn.call("POST", "/v1/imports", json=body), quiet=as_json)
    retrained: dict[str, Any] | None = None
    distilled: dict[str, Any] | None = None
    warnings: list[str] = []
    ended = doc["status"] in ("succeeded", "failed")
    if (candidates or distill) and ended and not doc["progress"]["jobs_imported"]:
        warnings.append(
            "nothing new was imported, so nothing was re-trained or distilled (earlier imports hold the jobs)"
        )
    elif ended:
        if distill:
            assert max_cost_usd is not None
            distilled = _distill(conn, doc["id"], max_cost_usd, quiet=as_json)
        if candidates:
            retrained, more = _retrain(conn, doc["id"], retrain_body, quiet=as_json)
            warnings += more
    if as_json:
        echo_json({"import": doc, "retrain": retrained, "distill": distilled, "warnings": warnings})
    else:
        click.echo(_summary(doc, retrained, distilled, warnings))
    if doc["status"] != "succeeded":
        click.get_current_context().exit(1)
