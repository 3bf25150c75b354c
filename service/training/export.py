"""Export a locally trained model (final or ``checkpoint-N``) as a PEFT adapter, merged safetensors or
GGUF, each with a model card, written to disk and archived as a streamed ``.tar``.

Entry point: ``python -m service.training.export --model DIR --format F --out DIR [--archive F.tar]``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from service.training import checkpoints
from service.training.errors import MODEL_NOT_FOUND, TrainingError

log = logging.getLogger(__name__)

FORMATS = ("adapter", "merged", "gguf")
GGUF_TYPES = ("f16", "q8_0")
EXPORT_UNSUPPORTED = "export_unsupported"

MODEL_META = "tuneline-model.json"  # written next to a trained model by service.training.engine
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
RESULT_FILE = "result.csv"
CARD = "README.md"
# Everything a tokenizer may save; whichever exist are copied with an adapter.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
_COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class ExportSource:
    """What a model directory holds: an adapter on ``base_model``, or full weights."""

    path: Path
    base_model: str | None  # None for full weights (the directory is the model)
    method: str  # "lora" or "full"
    job_id: str
    step: int | None  # the checkpoint's step; None for the final model

    @property
    def is_adapter(self) -> bool:
        return self.base_model is not None


@dataclass(frozen=True)
class CardFacts:
    """What the model card says beyond the source: data hash, knobs and evaluation, when known."""

    model_name: str | None = None
    training_file_sha256: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None

    @classmethod
    def from_spec(cls, spec_path: Path, evaluation: dict[str, Any] | None = None) -> CardFacts:
        """Hyperparameters from a run's SPEC.json and the sha256 of its training file."""
        raw = json.loads(spec_path.read_text(encoding="utf-8"))
        train = Path(raw["train_file"]) if raw.get("train_file") else None
        digest = sha256_file(train) if train is not None and train.is_file() else None
        return cls(
            training_file_sha256=digest,
            hyperparameters=dict(raw.get("hyperparameters") or {}),
            evaluation=evaluation,
        )


@dataclass(frozen=True)
class ExportResult:
    """A finished export directory: its files (relative names) with sizes, and how long it took."""

    path: Path
    format: str
    files: dict[str, int]
    seconds: float

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


def _read_meta(folder: Path) -> dict[str, Any] | None:
    meta = folder / MODEL_META
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


def resolve_source(path: Path, base_model: str | None = None) -> ExportSource:
    """Describe a final model directory (``output_dir/model``) or a ``checkpoint-N`` directory.

    The base of an adapter comes from ``base_model`` when given, else the model's
    ``tuneline-model.json`` (for a checkpoint, the finished run's one next to it), else the
    ``base_model_name_or_path`` PEFT recorded while training.
    """
    path = Path(path)
    if not path.is_dir():
        raise TrainingError(MODEL_NOT_FOUND, f"model directory {path} does not exist")
    step = checkpoints.step_of(path)
    if step is not None and not (path / checkpoints.COMPLETE_MARKER).is_file():
        raise TrainingError(
            MODEL_NOT_FOUND, f"checkpoint {path} is incomplete (no {checkpoints.COMPLETE_MARKER})"
        )
    meta = _read_meta(path)
    if meta is None and step is not None:
        meta = _read_meta(path.parent.parent / "model")  # output_dir/checkpoints/checkpoint-N
    meta = meta or {}
    job_id = str(meta.get("job_id") or "")
    if (path / ADAPTER_CONFIG).is_file():
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise TrainingError(MODEL_NOT_FOUND, f"adapter directory {path} has no adapter weights")
        recorded = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
        base = base_model or meta.get("base_model") or recorded
        if not base:
            raise TrainingError(MODEL_NOT_FOUND, f"{path} is an adapter whose base model is unknown")
        return ExportSource(path, str(base), "lora", job_id, step)
    if (path / "config.json").is_file():
        return ExportSource(path, None, "full", job_id, step)
    raise TrainingError(MODEL_NOT_FOUND, f"{path} holds neither an adapter nor model weights")


def load_merged(source: ExportSource, cache_dir: Path | None = None) -> tuple[Any, Any]:
    """The model with its adapter merged in (or the full weights) and its tokenizer, in fp32 on the CPU,
    as Tuneline's inference serves it there."""
    from service.training.models import ModelSource, load_base, load_tokenizer

    if source.base_model is not None:
        from peft import PeftModel

        base, _, _ = load_base(source.base_model, cache_dir)
        model = PeftModel.from_pretrained(base, str(source.path)).merge_and_unload()
        tokenizer = load_tokenizer(ModelSource(str(source.path), str(source.path)))
    else:
        model, tokenizer, _ = load_base(str(source.path), cache_dir)
    model.eval()
    return model, tokenizer


def _copy(src: Path, dst: Path) -> None:
    with src.open("rb") as reader, dst.open("wb") as writer:
        shutil.copyfileobj(reader, writer, _COPY_BUFFER)


def _write_adapter(source: ExportSource, out: Path) -> None:
    if not source.is_adapter:
        raise TrainingError(
            EXPORT_UNSUPPORTED,
            f"{source.path} holds full weights (method full): there is no adapter; export merged or gguf",
        )
    for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS, *TOKENIZER_FILES):
        if (source.path / name).is_file():
            _copy(source.path / name, out / name)
    meta = {"base_model": source.base_model, "method": source.method, "job_id": source.job_id}
    (out / MODEL_META).write_text(json.dumps(meta), encoding="utf-8")


def _generation_config(model: Any, tokenizer: Any) -> Any:
    """The base's generation config with the tokenizer's end of turn, so that readers stop where
    Tuneline stops (its ``generate`` passes ``eos_token_id`` explicitly)."""
    from transformers import GenerationConfig

    config = GenerationConfig.from_model_config(model.config)
    existing = getattr(model, "generation_config", None)
    if existing is not None:
        config = GenerationConfig.from_dict(existing.to_dict())
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return config


def _write_merged(model: Any, tokenizer: Any, out: Path) -> None:
    model.generation_config = _generation_config(model, tokenizer)
    model.save_pretrained(str(out))  # safetensors: transformers 5 writes nothing else
    tokenizer.save_pretrained(str(out))


def _result_summary(source: ExportSource) -> dict[str, Any] | None:
    """The last row of ``result.csv`` up to the exported step (final metrics for the final model)."""
    output_dir = source.path.parent.parent if source.step is not None else source.path.parent
    result = output_dir / RESULT_FILE
    if not result.is_file():
        return None
    with result.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if source.step is None or int(r["step"]) <= source.step]
    if not rows:
        return None
    return {k: v for k, v in rows[-1].items() if v not in ("", None)}


def _card(source: ExportSource, fmt: str, facts: CardFacts, files: Iterable[str], extra: str = "") -> str:
    """README.md of an export: what it is, where it came from, how it was trained and how it did."""
    name = facts.model_name or source.job_id or source.path.name
    origin = f"checkpoint at step {source.step}" if source.step is not None else "final model"
    lines = [
        "---",
        f"base_model: {json.dumps(source.base_model or 'unknown (full weights)')}",
        "library_name: " + ("peft" if fmt == "adapter" else "gguf" if fmt == "gguf" else "transformers"),
        "tags: [tuneline, fine-tuned]",
        "---",
        "",
        f"# {name}",
        "",
        f"Exported by Tuneline as `{fmt}` from the {origin} of job `{source.job_id or 'unknown'}`.",
        "",
        "## Training",
        "",
        f"- Base model: `{source.base_model or 'this directory holds full fine-tuned weights'}`",
        f"- Method: {'LoRA (peft)' if source.method == 'lora' else 'full fine-tuning'}",
        f"- Training data sha256: `{facts.training_file_sha256 or 'not recorded'}`",
    ]
    for key in sorted(facts.hyperparameters):
        lines.append(f"- `{key}`: {json.dumps(facts.hyperparameters[key])}")
    summary = _result_summary(source)
    if summary:
        lines += ["", "## Training metrics (last logged step)", ""]
        lines += [f"- `{k}`: {v}" for k, v in summary.items()]
    if facts.evaluation:
        evaluation = json.dumps(facts.evaluation, indent=2, ensure_ascii=False)
        lines += ["", "## Evaluation", "", "```json", evaluation, "```"]
    lines += ["", "## Files", ""]
    lines += [f"- `{f}`" for f in sorted(files)]
    if extra:
        lines += ["", extra.rstrip()]
    return "\n".join(lines) + "\n"


_USAGE = {
    "adapter": (
        "## Use\n\n```python\nfrom peft import AutoPeftModelForCausalLM\n"
        "model = AutoPeftModelForCausalLM.from_pretrained(PATH)  # the base named in adapter_config.json\n"
        "```\n\n`base_model_name_or_path` in `adapter_config.json` is where the base was on the training"
        " machine; pass another location with `PeftModel.from_pretrained(base, PATH)`.\n"
    ),
    "merged": (
        "## Use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained(PATH)\n"
        "tokenizer = AutoTokenizer.from_pretrained(PATH)\n"
        "```\n\nvLLM: `vllm serve PATH`.\n"
    ),
    "gguf": (
        "## Use\n\n- llama.cpp: `llama-cli -m MODEL.gguf` (chat template and stop tokens are in the file)\n"
        "- Ollama: `ollama create NAME -f Modelfile && ollama run NAME`\n"
        "- transformers: `AutoModelForCausalLM.from_pretrained(DIR, gguf_file=MODEL.gguf)`\n"
    ),
}


def _listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def export_model(
    model_dir: Path,
    fmt: str,
    out: Path,
    *,
    gguf_type: str = "f16",
    base_model: str | None = None,
    facts: CardFacts | None = None,
    cache_dir: Path | None = None,
) -> ExportResult:
    """Write the export of ``model_dir`` (a final model or a ``checkpoint-N``) in ``fmt`` to the
    directory ``out``, atomically (a temporary sibling renamed at the end); returns its listing.

    ``adapter``: the PEFT adapter and tokenizer. ``merged``: safetensors, config, generation config and
    tokenizer. ``gguf``: ``model-<gguf_type>.gguf`` and an Ollama ``Modelfile``. Each has a README.md.
    Raises ``TrainingError`` (``model_not_found``, ``export_unsupported``).
    """
    if fmt not in FORMATS:
        raise TrainingError(EXPORT_UNSUPPORTED, f"format must be one of {FORMATS}, got {fmt!r}")
    if gguf_type not in GGUF_TYPES:
        raise TrainingError(EXPORT_UNSUPPORTED, f"gguf type must be one of {GGUF_TYPES}, got {gguf_type!r}")
    started = time.monotonic()
    source = resolve_source(model_dir, base_model)
    facts = facts or CardFacts()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        extra = _USAGE[fmt]
        if fmt == "adapter":
            _write_adapter(source, tmp)
        else:
            model, tokenizer = load_merged(source, cache_dir)
            if fmt == "merged":
                _write_merged(model, tokenizer, tmp)
            else:
                from service.training.gguf_export import write_gguf

                written = write_gguf(model, tokenizer, tmp, gguf_type, facts.model_name or source.job_id)
                extra = extra.replace("MODEL.gguf", written.gguf.name)
                if written.note:
                    extra += f"\n{written.note}\n"
            del model
        files = [p.name for p in tmp.iterdir()] + [CARD]
        (tmp / CARD).write_text(_card(source, fmt, facts, files, extra), encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, fmt, _listing(out), round(time.monotonic() - started, 3))


def _tarinfo(path: Path, arcname: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    stat = path.stat()
    info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
    return info  # owner 0/0 and no user names: nothing of the server leaks into the archive


def _members(folder: Path, prefix: str) -> list[tuple[Path, tarfile.TarInfo]]:
    return [(p, _tarinfo(p, f"{prefix}/{p.name}")) for p in sorted(folder.iterdir()) if p.is_file()]


def archive_size(folder: Path, prefix: str | None = None) -> int:
    """The exact size of ``write_archive(folder, ...)``'s output, for a Content-Length or a
    progress bar, computed from the headers without reading any file."""
    size = 0
    for _, info in _members(folder, prefix or folder.name):
        size += len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        size += -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    size += 2 * tarfile.BLOCKSIZE  # end-of-archive marker
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def write_archive(folder: Path, fileobj: BinaryIO, prefix: str | None = None) -> int:
    """Write ``folder``'s files as an uncompressed tar to ``fileobj`` incrementally (stream mode:
    the file object needs only ``write``; a file is never held whole in memory); returns bytes written.

    Uncompressed because weights barely compress (safetensors and GGUF are dense floats or
    quantized blocks: gzip saves a few percent for a single-core pass over gigabytes) and because
    the size is then known in advance (``archive_size``).
    """
    written = 0

    class _Counting:
        def write(self, data: bytes) -> int:
            nonlocal written
            fileobj.write(data)
            written += len(data)
            return len(data)

    with tarfile.open(fileobj=_Counting(), mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path, info in _members(folder, prefix or folder.name):
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return written


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a Tuneline-trained model")
    parser.add_argument("--model", required=True, type=Path, help="output_dir/model or a checkpoint-N dir")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--gguf-type", default="f16", choices=GGUF_TYPES)
    parser.add_argument("--out", required=True, type=Path, help="export directory (replaced)")
    parser.add_argument("--archive", type=Path, help="also write the directory as this .tar")
    parser.add_argument("--base-model", help="base of an adapter, when not recorded with it")
    parser.add_argument("--spec", type=Path, help="the run's SPEC.json: hyperparameters and data hash")
    parser.add_argument("--evaluation", type=Path, help="a JSON evaluation summary for the model card")
    parser.add_argument("--name", help="model name in the card (e.g. the ft:... name)")
    parser.add_argument("--cache-dir", type=Path, help="where dequantized GGUF bases are cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    evaluation = json.loads(args.evaluation.read_text(encoding="utf-8")) if args.evaluation else None
    facts = CardFacts.from_spec(args.spec, evaluation) if args.spec else CardFacts(evaluation=evaluation)
    if args.name:
        facts = CardFacts(args.name, facts.training_file_sha256, facts.hyperparameters, facts.evaluation)
    try:
        result = export_model(
            args.model,
            args.format,
            args.out,
            gguf_type=args.gguf_type,
            base_model=args.base_model,
            facts=facts,
            cache_dir=args.cache_dir,
        )
    except TrainingError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message}}, ensure_ascii=False))
        return 1
    summary: dict[str, Any] = {
        "path": str(result.path),
        "format": result.format,
        "files": result.files,
        "bytes": result.bytes,
        "seconds": result.seconds,
    }
    if args.archive:
        started = time.monotonic()
        with args.archive.open("wb") as handle:
            summary["archive_bytes"] = write_archive(result.path, handle)
        summary["archive_seconds"] = round(time.monotonic() - started, 3)
    summary["peak_rss_bytes"] = _peak_rss_bytes()
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
