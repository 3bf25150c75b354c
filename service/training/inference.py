"""Generation with a trained model (base + LoRA adapter, or full weights) or a base model,
with a per-process model cache; chat messages go through the tokenizer's chat template."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.training.errors import MODEL_NOT_FOUND, TrainingError
from service.training.models import ModelSource, load_base, load_tokenizer

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
MODEL_META = "tuneline-model.json"  # written next to a trained model by service.training.engine
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class Loaded:
    """A model ready to generate, with its tokenizer and a lock (generation is not re-entrant)."""

    model: Any
    tokenizer: Any
    device: str
    lock: threading.Lock


_cache: dict[tuple[str, str], Loaded] = {}
_cache_lock = threading.Lock()


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _load(name: str, device: str, cache_dir: Path | None) -> Loaded:
    import torch

    dtype = torch.bfloat16 if device == "cuda" else None
    folder = Path(name)
    meta_file = folder / MODEL_META
    if folder.is_dir() and meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if (folder / ADAPTER_CONFIG).is_file():
            from peft import PeftModel

            base, _, _ = load_base(meta["base_model"], cache_dir, dtype)
            model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
            tokenizer = load_tokenizer(ModelSource(str(folder), str(folder)))
        else:
            model, tokenizer, _ = load_base(str(folder), cache_dir, dtype)
    elif folder.is_dir() and (folder / ADAPTER_CONFIG).is_file():
        raise TrainingError(
            MODEL_NOT_FOUND, f"{name} is an adapter without {MODEL_META}: its base is unknown"
        )
    else:
        model, tokenizer, _ = load_base(name, cache_dir, dtype)
    model.to(device)
    model.eval()
    return Loaded(model, tokenizer, device, threading.Lock())


def get_model(name: str, device: str = "auto", cache_dir: Path | None = None) -> Loaded:
    """The cached model for ``name`` (a trained model directory, a base model dir, id or alias)."""
    device = _device(device)
    key = (str(Path(name).resolve()) if Path(name).exists() else name, device)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _cache[key] = _load(name, device, cache_dir)
        return loaded


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generate(
    model_dir_or_base: str,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    stop: list[str] | None = None,
    *,
    device: str = "auto",
    cache_dir: Path | None = None,
    seed: int | None = None,
) -> tuple[str, str, int, int]:
    """Complete ``messages`` (chat template + generation prompt) or a raw ``prompt``.

    Greedy at temperature 0. Returns ``(text, finish_reason, prompt_tokens, completion_tokens)``;
    ``finish_reason`` is ``stop`` (end of turn or a stop string, which is cut off) or ``length``.
    """
    import torch

    if (messages is None) == (prompt is None):
        raise ValueError("pass exactly one of messages or prompt")
    loaded = get_model(model_dir_or_base, device, cache_dir)
    tokenizer, model = loaded.tokenizer, loaded.model
    if messages is not None:
        chat = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        enc = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    else:
        enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    input_ids = enc["input_ids"].to(loaded.device)
    prompt_tokens = int(input_ids.shape[1])
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    room = context - prompt_tokens if context else max_tokens
    if room <= 0:
        raise TrainingError(
            CONTEXT_LENGTH_EXCEEDED,
            f"the prompt has {prompt_tokens} tokens; the model's context is {context}",
        )
    stop = [s for s in (stop or []) if s]
    kwargs: dict[str, Any] = {
        "max_new_tokens": max(1, min(max_tokens, room)),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    }
    if temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop:
        kwargs.update(stop_strings=stop, tokenizer=tokenizer)
    with loaded.lock, torch.inference_mode():
        if seed is not None:
            torch.manual_seed(seed)
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    new_tokens = output[0][prompt_tokens:].tolist()
    completion_tokens = len(new_tokens)
    ended = bool(new_tokens) and new_tokens[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    text, stopped = _cut_at_stop(text, stop)
    finish_reason = "stop" if ended or stopped else "length"
    return text, finish_reason, prompt_tokens, completion_tokens
