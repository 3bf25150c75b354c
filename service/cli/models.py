"""``tuneline models build-demo``: a tiny local base model for the ``local`` provider, built offline."""

from __future__ import annotations

import os
from pathlib import Path

import click

from service.cli.client import echo_json

# Chinese fund Q&A shipped with the package (service/demo), used when --data is not given.
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "demo" / "funds_qa.jsonl"


@click.group()
def models() -> None:
    """Base models for the local trainer (needs the `train` extra)."""


@models.command("build-demo")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="directory to write the model to (replaced if it exists)",
)
@click.option(
    "--data",
    "data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSONL (chat or prompt/completion) to train the tokenizer on [default: the bundled sample]",
)
@click.option(
    "--pretrain-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="brief causal-LM pretraining steps on the data, so the base is not pure noise",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (it always is).")
def build_demo_command(out: Path, data: Path | None, pretrain_steps: int, as_json: bool) -> None:
    """Build a tiny Llama-style model from scratch: a byte-level BPE tokenizer trained on the
    data, ChatML chat template, random weights. No network is used."""
    data = data or DEFAULT_DATA
    if not data.is_file():
        raise click.UsageError(f"no sample data at {data}; pass --data FILE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # this command never reaches a hub
    try:
        from service.training.demo import build_demo
    except ImportError as exc:
        raise click.ClickException(
            f"the train extra is not installed ({exc}); pip install -e '.[train]'"
        ) from None
    summary = build_demo(out, data, pretrain_steps=pretrain_steps)
    echo_json(summary)
