"""Generation with a trained model (base + LoRA adapter, or full weights) or a base model,
with a per-process model cache; chat messages go through the tokenizer's chat template."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.training import checkpoints
from service.training.errors import MODEL_NOT_FOUND, TrainingError
from service.training.models import ModelSource, load_base, load_tokenizer

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
STREAM_QUEUE_TOKENS = 8  # generated tokens a streaming reader may lag behind before generation waits
MODEL_META = "tuneline-model.json"  # written next to a trained model by service.training.engine
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class Loaded:
    """A model ready to generate, with its tokenizer and a lock (generation is not re-entrant)."""

    model: Any
    tokenizer: Any
    device: str
    lock: threading.Lock


# Loaded models by (name, device), least recently used first; a new model directory (a job that
# just finished) is loaded on its first request, so a worker serves it without a restart.
_cache: OrderedDict[tuple[str, str], Loaded] = OrderedDict()
_cache_lock = threading.Lock()
DEFAULT_MAX_MODELS = 2


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
    if checkpoints.step_of(folder) is not None and not meta_file.is_file():
        # A checkpoint (output_dir/checkpoints/checkpoint-N): its base and tokenizer are the
        # finished run's, next to it.
        meta_file = folder.parent.parent / "model" / MODEL_META
    if folder.is_dir() and meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if (folder / ADAPTER_CONFIG).is_file():
            from peft import PeftModel

            base, _, _ = load_base(meta["base_model"], cache_dir, dtype)
            model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
            home = str(meta_file.parent)
            tokenizer = load_tokenizer(ModelSource(home, home))
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


def get_model(
    name: str, device: str = "auto", cache_dir: Path | None = None, max_models: int = DEFAULT_MAX_MODELS
) -> Loaded:
    """The cached model for ``name`` (a trained model directory, a base model dir, id or alias).

    At most ``max_models`` stay loaded: the least recently used one is dropped (a generation still
    using it keeps its own reference until it ends).
    """
    device = _device(device)
    key = (str(Path(name).resolve()) if Path(name).exists() else name, device)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _cache[key] = _load(name, device, cache_dir)
        _cache.move_to_end(key)
        while len(_cache) > max(1, max_models):
            _cache.popitem(last=False)
        return loaded


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


@dataclass
class _Request:
    """A completion ready to run: the model, the prompt's token ids and ``generate``'s arguments."""

    loaded: Loaded
    input_ids: Any
    kwargs: dict[str, Any]
    stop: list[str]
    seed: int | None

    @property
    def prompt_tokens(self) -> int:
        return int(self.input_ids.shape[1])


def _prepare(
    model_dir_or_base: str,
    messages: list[dict[str, Any]] | None,
    prompt: str | None,
    max_tokens: int,
    temperature: float,
    stop: list[str] | None,
    device: str,
    cache_dir: Path | None,
    seed: int | None,
    max_models: int = DEFAULT_MAX_MODELS,
) -> _Request:
    if (messages is None) == (prompt is None):
        raise ValueError("pass exactly one of messages or prompt")
    loaded = get_model(model_dir_or_base, device, cache_dir, max_models)
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
    return _Request(loaded, input_ids, kwargs, stop, seed)


def _run(request: _Request, **extra: Any) -> Any:
    import torch

    with request.loaded.lock, torch.inference_mode():
        if request.seed is not None:
            torch.manual_seed(request.seed)
        return request.loaded.model.generate(
            input_ids=request.input_ids,
            attention_mask=torch.ones_like(request.input_ids),
            **request.kwargs,
            **extra,
        )


def _finish(request: _Request, new_tokens: list[int]) -> tuple[str, str]:
    """The answer's text (cut at a stop string) and ``finish_reason``."""
    tokenizer = request.loaded.tokenizer
    ended = bool(new_tokens) and new_tokens[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    text, stopped = _cut_at_stop(text, request.stop)
    return text, "stop" if ended or stopped else "length"


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
    max_models: int = DEFAULT_MAX_MODELS,
) -> tuple[str, str, int, int]:
    """Complete ``messages`` (chat template + generation prompt) or a raw ``prompt``.

    Greedy at temperature 0. Returns ``(text, finish_reason, prompt_tokens, completion_tokens)``;
    ``finish_reason`` is ``stop`` (end of turn or a stop string, which is cut off) or ``length``.
    """
    request = _prepare(
        model_dir_or_base,
        messages,
        prompt,
        max_tokens,
        temperature,
        stop,
        device,
        cache_dir,
        seed,
        max_models,
    )
    output = _run(request)
    new_tokens = output[0][request.prompt_tokens :].tolist()
    text, finish_reason = _finish(request, new_tokens)
    return text, finish_reason, request.prompt_tokens, len(new_tokens)


def _held_back(text: str, stop: list[str]) -> int:
    """How many trailing characters may still change: an incomplete UTF-8 sequence (decoded as
    U+FFFD) or the start of a stop string that the next tokens may complete."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class CompletionStream:
    """A completion generated in a background thread, iterated as text chunks while it is generated.

    The chunks joined equal ``generate``'s text for the same arguments (same tokens, same decoding,
    same stop-string cut). Once iteration ends, ``finish_reason``, the token counts,
    ``time_to_first_token_s`` (start to the first chunk) and ``total_s`` are set. Leaving the loop
    early (or ``close()``) stops the generation at the next token. The hand-off queue is bounded, so
    a reader that falls behind slows the generation instead of piling tokens up in memory;
    ``tokens_generated`` counts what the model has produced so far.
    """

    def __init__(self, request: _Request) -> None:
        self._request = request
        self.prompt_tokens = request.prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.time_to_first_token_s: float | None = None
        self.total_s: float | None = None
        self.tokens_generated = 0
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()

    def _thread(self, tokens: queue.Queue[Any], cancel: threading.Event) -> threading.Thread:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        class Streamer(BaseStreamer):  # type: ignore[misc]
            """Hands new token ids to the reader; ``generate`` first puts the prompt's, skipped."""

            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if self.prompt_seen:
                    ids = value.reshape(-1).tolist()
                    stream.tokens_generated += len(ids)
                    tokens.put(ids)
                self.prompt_seen = True

            def end(self) -> None:
                pass

        stream = self

        class Cancelled(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        def work() -> None:
            try:
                _run(
                    self._request, streamer=Streamer(), stopping_criteria=StoppingCriteriaList([Cancelled()])
                )
            except BaseException as exc:  # handed to the reader, which raises it
                tokens.put(exc)
            finally:
                tokens.put(None)

        return threading.Thread(target=work, name="tuneline-stream", daemon=True)

    def _generate(self) -> Generator[str, None, None]:
        request = self._request
        tokenizer = request.loaded.tokenizer
        tokens: queue.Queue[Any] = queue.Queue(maxsize=STREAM_QUEUE_TOKENS)
        cancel = threading.Event()
        started = time.monotonic()
        thread = self._thread(tokens, cancel)
        thread.start()
        new_tokens: list[int] = []
        sent = ""
        try:
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                new_tokens.extend(item)
                text = tokenizer.decode(new_tokens, skip_special_tokens=True)
                cut, stopped = _cut_at_stop(text, request.stop)
                ready = cut if stopped else text[: len(text) - _held_back(text, request.stop)]
                if len(ready) > len(sent) and ready.startswith(sent):
                    if self.time_to_first_token_s is None:
                        self.time_to_first_token_s = round(time.monotonic() - started, 4)
                    chunk, sent = ready[len(sent) :], ready
                    yield chunk
            text, self.finish_reason = _finish(request, new_tokens)
            self.completion_tokens = len(new_tokens)
            if text != sent:  # the held-back tail (or a decoding that changed what came before)
                if not text.startswith(sent):
                    raise RuntimeError("streamed text diverged from the final decoding")
                if self.time_to_first_token_s is None:
                    self.time_to_first_token_s = round(time.monotonic() - started, 4)
                yield text[len(sent) :]
            self.total_s = round(time.monotonic() - started, 4)
        finally:
            cancel.set()
            while thread.is_alive() or not tokens.empty():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    tokens.get(timeout=0.05)
            thread.join()


def generate_stream(
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
    max_models: int = DEFAULT_MAX_MODELS,
) -> CompletionStream:
    """``generate`` token by token: the model is loaded and the prompt checked now (errors raise
    here, as in ``generate``); iterating the returned stream yields text chunks as they come."""
    request = _prepare(
        model_dir_or_base,
        messages,
        prompt,
        max_tokens,
        temperature,
        stop,
        device,
        cache_dir,
        seed,
        max_models,
    )
    return CompletionStream(request)
