"""One training run: load base model and data, train with trl's SFTTrainer (+ peft LoRA), stream
protocol lines, checkpoint and resume, save the final model and ``result.csv``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.jobs.metrics import row, to_csv
from service.training import checkpoints
from service.training.data import Encoded, load_examples
from service.training.errors import TRAINING_FAILED, TrainingError
from service.training.models import load_base, resolve
from service.training.protocol import Emitter
from service.training.spec import EVAL_MAX_EXAMPLES, KEEP_CHECKPOINTS, MAX_DEFAULT_SEQ_LENGTH, TrainSpec

log = logging.getLogger(__name__)

MODEL_META = "tuneline-model.json"
RESULT_FILE = "result.csv"
METRIC_KEYS = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def setup_torch(threads: int | None) -> None:
    import torch

    torch.set_num_threads(threads or default_threads())
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError(TRAINING_FAILED, "device cuda was requested but no CUDA device is available")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def precision(device: str) -> dict[str, bool]:
    """bf16 where the GPU supports it, else fp16 on GPUs; full fp32 on the CPU."""
    import torch

    if device != "cuda":
        return {"bf16": False, "fp16": False}
    bf16 = bool(torch.cuda.is_bf16_supported())
    return {"bf16": bf16, "fp16": not bf16}


def model_context(model: Any, tokenizer: Any) -> int:
    ctx = getattr(model.config, "max_position_embeddings", None)
    if not ctx:
        ctx = getattr(tokenizer, "model_max_length", None) or MAX_DEFAULT_SEQ_LENGTH
    return int(min(ctx, 10**7))


def to_dataset(examples: list[Encoded]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]}
    )


def _round(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _make_callback(emitter: Emitter, resumed_from: int | None) -> Any:
    from transformers import TrainerCallback

    class ProtocolCallback(TrainerCallback):  # type: ignore[misc]
        """Turns the trainer's logs and saves into protocol lines."""

        def __init__(self) -> None:
            self.started = time.monotonic()
            self.start_step = 0
            self.pending: dict[str, Any] | None = None
            self.last: dict[str, Any] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.monotonic()
            self.start_step = state.global_step
            emitter.emit(
                "started",
                total_steps=state.max_steps,
                resumed_from_step=resumed_from,
                device=str(args.device.type),
                train_examples=len(kwargs["train_dataloader"].dataset),
                trainable_params=sum(p.numel() for p in kwargs["model"].parameters() if p.requires_grad),
            )

        def _flush(self) -> None:
            if self.pending is not None:
                self.last = {k: v for k, v in self.pending.items() if k != "type"}
                emitter.emit("metrics", **self.last)
                self.pending = None

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                self._flush()
                elapsed = time.monotonic() - self.started
                done = state.global_step - self.start_step
                per_step = elapsed / done if done else None
                self.pending = {
                    "step": state.global_step,
                    "train_loss": _round(logs["loss"]),
                    "train_mean_token_accuracy": _round(logs.get("mean_token_accuracy")),
                    "valid_loss": None,
                    "valid_mean_token_accuracy": None,
                    "tokens_per_s": _round(logs.get("num_tokens", 0) / elapsed) if elapsed > 0 else None,
                    "eta_s": _round(per_step * (state.max_steps - state.global_step)) if per_step else None,
                    "epoch": _round(state.epoch),
                }
                if not control.should_evaluate:
                    self._flush()
            elif "eval_loss" in logs and self.pending is not None:
                self.pending["valid_loss"] = _round(logs["eval_loss"])
                self.pending["valid_mean_token_accuracy"] = _round(logs.get("eval_mean_token_accuracy"))
                self._flush()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not path.is_dir():
                return
            metrics = {k: self.last.get(k) for k in ("step", *METRIC_KEYS)}
            checkpoints.mark_complete(path, metrics)
            emitter.emit("checkpoint", step=state.global_step, path=str(path), metrics=metrics)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()

    return ProtocolCallback()


def result_rows(log_history: list[dict[str, Any]], final_eval: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per-step rows with OpenAI's result-file columns, from the trainer's log history."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        current = rows.setdefault(step, {"step": step})
        if "loss" in entry:
            current["train_loss"] = _round(entry["loss"])
            current["train_mean_token_accuracy"] = _round(entry.get("mean_token_accuracy"))
        if "eval_loss" in entry:
            current["valid_loss"] = _round(entry["eval_loss"])
            current["valid_mean_token_accuracy"] = _round(entry.get("eval_mean_token_accuracy"))
    ordered = [row(rows[s]) for s in sorted(rows) if "train_loss" in rows[s]]
    if ordered and final_eval:
        ordered[-1]["full_valid_loss"] = _round(final_eval.get("eval_loss"))
        ordered[-1]["full_valid_mean_token_accuracy"] = _round(final_eval.get("eval_mean_token_accuracy"))
    return ordered


@dataclass(frozen=True)
class RunHooks:
    """How a launcher other than the child process (Ray Train, ``service.training.ray_train``)
    runs this engine in one of several data-parallel workers.

    ``checkpoints_dir`` is this worker's own (the launcher persists checkpoints itself),
    ``resume_from`` the checkpoint the launcher restored, ``wrap_trainer`` gets the built trainer
    (to add callbacks, or wrap it) and returns the one to train. Only the world's rank-0 process
    writes the final model and ``result.csv``.
    """

    checkpoints_dir: Path
    resume_from: Path | None = None
    wrap_trainer: Callable[[Any], Any] = lambda trainer: trainer


def _save_final(trainer: Any, tokenizer: Any, spec: TrainSpec) -> Path:
    """Write the adapter (or full weights) and tokenizer next to the final dir, then rename."""
    final = spec.model_dir
    tmp = spec.output_dir / f".model.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    meta = {"base_model": spec.base_model, "method": spec.method, "job_id": spec.job_id}
    (tmp / MODEL_META).write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def train(spec: TrainSpec, emitter: Emitter, hooks: RunHooks | None = None) -> None:
    """Run one training job to the end, emitting protocol lines; raises ``TrainingError``."""
    hp = spec.hyperparameters
    resolve(spec.base_model)  # a missing model fails before the slow imports
    setup_torch(spec.threads)
    device = pick_device(spec.device)
    model, tokenizer, _ = load_base(spec.base_model, spec.cache_dir)
    context = model_context(model, tokenizer)
    max_length = min(hp.max_seq_length or MAX_DEFAULT_SEQ_LENGTH, context)
    train_examples = load_examples(spec.train_file, tokenizer, max_length, "training file")
    valid_examples = (
        load_examples(spec.validation_file, tokenizer, max_length, "validation file")
        if spec.validation_file
        else []
    )

    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    spec.output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints_dir = hooks.checkpoints_dir if hooks else spec.checkpoints_dir
    if not spec.resume:
        checkpoints.remove_all(checkpoints_dir)
    for path in checkpoints.remove_incomplete(checkpoints_dir):
        log.warning("removed incomplete checkpoint %s", path)
    if hooks:
        resume_from = hooks.resume_from
    else:
        resume_from = checkpoints.newest_complete(checkpoints_dir) if spec.resume else None

    config = SFTConfig(
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        num_train_epochs=hp.n_epochs,
        max_steps=hp.max_steps or -1,
        learning_rate=hp.effective_learning_rate(spec.method),
        lr_scheduler_type="linear",
        weight_decay=0.0,
        seed=hp.seed,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=hp.checkpoint_every,
        save_total_limit=KEEP_CHECKPOINTS,
        eval_strategy="steps" if valid_examples else "no",
        eval_steps=hp.checkpoint_every,
        max_length=max_length,
        packing=False,
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        dataloader_pin_memory=device == "cuda",
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        **precision(device),
    )
    peft_config = (
        LoraConfig(
            r=hp.lora_rank,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        if spec.method == "lora"
        else None
    )
    eval_subset = to_dataset(valid_examples[:EVAL_MAX_EXAMPLES]) if valid_examples else None
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=to_dataset(train_examples),
        eval_dataset=eval_subset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_make_callback(emitter, checkpoints.step_of(resume_from) if resume_from else None)],
    )
    if hooks:
        trainer = hooks.wrap_trainer(trainer)
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.monotonic() - started
    final_eval = trainer.evaluate(eval_dataset=to_dataset(valid_examples)) if valid_examples else None
    if not trainer.is_world_process_zero():
        return  # the other data-parallel workers took part in training and evaluation only
    model_dir = _save_final(trainer, tokenizer, spec)
    rows = result_rows(trainer.state.log_history, final_eval)
    (spec.output_dir / RESULT_FILE).write_text(to_csv(rows), encoding="utf-8")
    tokens_per_epoch = sum(len(e.input_ids) for e in train_examples)
    peak = None
    if device == "cuda":
        import torch

        peak = int(torch.cuda.max_memory_allocated())
    emitter.emit(
        "finished",
        model_dir=str(model_dir),
        steps=int(output.global_step),
        trained_tokens=int(tokens_per_epoch * (trainer.state.epoch or 0)),
        train_runtime_s=round(runtime, 3),
        result_file=str(spec.output_dir / RESULT_FILE),
        full_valid_loss=_round(final_eval.get("eval_loss")) if final_eval else None,
        full_valid_mean_token_accuracy=_round(final_eval.get("eval_mean_token_accuracy"))
        if final_eval
        else None,
        peak_gpu_memory_bytes=peak,
    )
