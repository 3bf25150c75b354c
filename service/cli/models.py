"""``tuneline models build-demo`` (a tiny local base model, built offline) and ``tuneline models
export`` (download a trained model as adapter, merged weights or GGUF)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from service.cli.client import ApiError, connect, echo_json

POLL_MAX_S = 30.0  # a Retry-After larger than this is capped: the CLI looks at least this often
CHUNK = 1 << 20

# Chinese fund Q&A shipped with the package (service/demo), used when --data is not given.
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "demo" / "funds_qa.jsonl"


@click.group()
def models() -> None:
    """Your fine-tuned models' files, and base models for the local trainer."""


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


@models.command("export")
@click.argument("model")
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["adapter", "merged", "gguf"]),
    help="adapter (PEFT), merged (safetensors, .tar) or gguf (llama.cpp, Ollama)",
)
@click.option("--quantization", type=click.Choice(["f16", "q8_0"]), help="gguf only [default: f16]")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="file to write, or an existing directory (the server's file name is kept)",
)
@click.option(
    "--unpack",
    is_flag=True,
    help="unpack the .tar into the --out directory (the export's folder, e.g. the .gguf beside its "
    "Modelfile) and remove the archive",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="seconds to wait for the export to be built",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (no progress bar).")
def export_command(
    model: str, fmt: str, quantization: str | None, out: Path, unpack: bool, timeout: float, as_json: bool
) -> None:
    """Download MODEL (or a ``...:ckpt-step-N`` checkpoint): waits while the server builds the
    export (the first request starts it), then streams it to --out with a progress bar. The export
    is a .tar of one folder: the weights and a model card (README.md); gguf adds an Ollama Modelfile
    (``ollama create NAME -f FOLDER/Modelfile``)."""
    if unpack and not out.is_dir():
        raise click.BadParameter("--unpack needs --out to be an existing directory", param_hint="--out")
    conn = connect()
    params = {"format": fmt, **({"quantization": quantization} if quantization else {})}
    path = f"/v1/models/{model}/content"
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        with conn.stream("GET", path, params=params) as response:
            if response.status_code == 202:
                response.read()
                status = response.json()
                wait = min(float(response.headers.get("retry-after") or 5), POLL_MAX_S)
                if time.monotonic() + wait > deadline:
                    raise ApiError(0, "timeout", None, f"the export was not built within {timeout:g}s")
                if not announced and not as_json:
                    click.echo(f"building {fmt} export of {model} ({status.get('status')})...", err=True)
                    announced = True
                time.sleep(wait)
                continue
            target = _target(out, response.headers.get("content-disposition") or "")
            written = _save(response, target, int(response.headers.get("content-length") or 0), as_json)
            break
    summary: dict[str, Any] = {
        "model": model,
        "format": fmt,
        "quantization": quantization,
        "path": str(target),
        "bytes": written,
    }
    if unpack:
        summary["path"] = str(_unpack(target, out))
    if as_json:
        echo_json(summary)
    else:
        unpacked = f", unpacked into {summary['path']}" if unpack else ""
        click.echo(f"wrote {written} bytes to {target}{unpacked}")


def _unpack(archive: Path, out: Path) -> Path:
    """Extract the export's one folder into ``out`` (members that would land outside it, links
    and special files are refused by tarfile's ``data`` filter); the archive is then removed."""
    import tarfile

    with tarfile.open(archive) as tar:
        tops = {member.name.split("/")[0] for member in tar.getmembers()}
        if len(tops) != 1:
            raise ApiError(0, "invalid_export", None, f"{archive.name} does not hold one folder")
        tar.extractall(out, filter="data")
    archive.unlink()
    return out / tops.pop()


def _target(out: Path, disposition: str) -> Path:
    if out.is_dir():
        name = disposition.split("filename=")[-1].strip().strip('"') or "export"
        return out / Path(name).name  # a bare name: the server cannot pick the directory
    return out


def _save(response: Any, target: Path, size: int, quiet: bool) -> int:
    """Stream the body to ``target`` (via a temporary name, renamed when complete)."""
    from tqdm import tqdm

    tmp = target.with_name(f".{target.name}.part")
    written = 0
    with (
        tqdm(
            total=size or None,
            unit="B",
            unit_scale=True,
            desc=target.name,
            file=sys.stderr,
            disable=True if quiet else None,
        ) as bar,
        tmp.open("wb") as handle,
    ):
        for chunk in response.iter_bytes(CHUNK):
            handle.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if size and written != size:
        tmp.unlink(missing_ok=True)
        raise ApiError(0, "connection_error", None, f"download ended at {written} of {size} bytes")
    os.replace(tmp, target)
    return written
