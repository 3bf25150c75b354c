"""``tuneline prepare FILE``: check and prepare a dataset offline, with the same engine as the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from service.cli.client import echo_json
from service.core.datasets import MODELS, PrepareOptions, Report, prepare_file
from service.core.datasets.models import DEFAULT_MODEL
from service.core.datasets.tokens import VocabularyError

FIXES = ("dedupe", "empty", "completion", "chat")
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def _human(report: Report, path: Path) -> str:
    d = report.to_dict()
    c = d["counts"]
    lines = [
        f"{path}: {d['format']} ({d['encoding']}), target {d['model']}",
        f"  {c['examples']} examples on {c['lines']} lines: {c['valid']} valid, {c['invalid']} invalid, "
        f"{c['duplicates']} duplicates, {c['empty']} empty; {c['kept']} kept "
        f"({c['train']} train, {c['validation']} validation, {c['test']} test)",
    ]
    if d["findings"]:
        lines.append("")
        lines.append("Findings:")
        for f in d["findings"]:
            where = f"line {f['line']}" if f["line"] else "file"
            if f.get("index") is not None:
                where += f" [element {f['index']}]"
            field = f" {f['field']}:" if f["field"] else ""
            lines.append(f"  {f['severity']:<7} {where:<10} {f['code']}:{field} {f['message']}")
        hidden = {
            code: n - sum(1 for f in d["findings"] if f["code"] == code)
            for code, n in d["finding_totals"].items()
        }
        for code, n in hidden.items():
            if n > 0:
                lines.append(f"  ... and {n} more {code}")
    if d["fixes"]:
        lines.append("")
        lines.append("Fixes:")
        for fx in d["fixes"]:
            lines.append(f"  {fx['code']}: {fx['message']} ({fx['count']})")
    t = d["tokens"]
    if t.get("total"):
        lines.append("")
        lines.append(
            f"Tokens ({t['encoding']}): total {t['total']}, min {t['min']}, mean {t['mean']}, "
            f"p95 {t['p95']}, max {t['max']}; billed per epoch {t['billed_per_epoch']}"
        )
        est = d["estimate"]
        lines.append(f"Estimate ({est['n_epochs']} epochs, prices as of {est['prices_as_of']}):")
        for cand in est["candidates"]:
            if cand["trainable"]:
                mark = "" if cand["exact"] else " ~"
                over = f", {cand['over_limit_examples']} over limit" if cand["over_limit_examples"] else ""
                tokens = f"{cand['billed_tokens']:>12} tokens"
                lines.append(f"  {cand['model']:<26} {tokens}  ${cand['cost_usd']:.4f}{mark}{over}")
            else:
                lines.append(f"  {cand['model']:<26} not trainable: {cand['reason']}")
    if report.outputs:
        lines.append("")
        for name, out in report.outputs.items():
            lines.append(f"Wrote {name}: {out}")
    lines.append("")
    lines.append("Usable for training." if report.usable else f"Not usable: {report.status_details}")
    return "\n".join(lines)


def _grader(given: str) -> dict[str, Any]:
    """``--grader``: inline JSON, or ``@FILE`` holding it; a usage error (exit 2) when unreadable."""
    try:
        text = Path(given[1:]).read_text(encoding="utf-8") if given.startswith("@") else given
        value = json.loads(text)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"not a grader's JSON: {exc}", param_hint="--grader") from None
    if not isinstance(value, dict):
        raise click.BadParameter("a grader is a JSON object", param_hint="--grader")
    return value


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    type=click.Choice(list(MODELS)),
    help="Target base model (tokenizer, limits, format).",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Write prepared splits here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--split", "split_validation", type=float, default=0.0, help="Validation share, e.g. 0.1.")
@click.option("--test-split", "split_test", type=float, default=0.0, help="Test share, e.g. 0.1.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split.")
@click.option("--system", "system_prompt", default=None, help="System prompt for chat conversion.")
@click.option("--no-fix", "no_fix", multiple=True, type=click.Choice(FIXES), help="Switch a fix off.")
@click.option("--skip-invalid-lines", is_flag=True, help="Drop invalid lines instead of failing.")
@click.option("--convert-encoding", is_flag=True, help="Convert GB18030/UTF-16 input to UTF-8.")
@click.option("--epochs", "n_epochs", type=int, default=None, help="Epochs for the estimate (default: auto).")
@click.option(
    "--grader",
    "grader_json",
    default=None,
    help="A reinforcement job's grader (OpenAI's JSON, or @FILE): every row must have the fields it reads.",
)
def prepare(
    file: Path,
    model: str,
    out_dir: Path | None,
    as_json: bool,
    split_validation: float,
    split_test: float,
    seed: int,
    system_prompt: str | None,
    no_fix: tuple[str, ...],
    skip_invalid_lines: bool,
    convert_encoding: bool,
    n_epochs: int | None,
    grader_json: str | None,
) -> None:
    """Check and prepare a dataset file offline (exit 0: usable, 1: errors, 2: usage)."""
    grader = _grader(grader_json) if grader_json is not None else None
    options = PrepareOptions(
        model=model,
        system_prompt=system_prompt,
        skip_invalid_lines=skip_invalid_lines,
        dedupe="dedupe" not in no_fix,
        drop_empty="empty" not in no_fix,
        to_chat=False if "chat" in no_fix else None,
        split_validation=split_validation,
        split_test=split_test,
        seed=seed,
        convert_encoding=convert_encoding,
        completion_fixes="completion" not in no_fix,
        n_epochs=n_epochs,
        method="reinforcement" if grader is not None else None,
        grader=grader,
    )
    try:
        options.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    size = file.stat().st_size
    bar: Any = None
    if size >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc="prepare", file=sys.stderr)
    try:
        report = prepare_file(file, options, out_dir=out_dir, progress=bar.update if bar else None)
    except (OSError, VocabularyError) as exc:
        # the machine's fault, not the file's content (content problems are findings): one line
        raise click.ClickException(f"cannot prepare {file}: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(_human(report, file))
    sys.exit(0 if report.usable else 1)
