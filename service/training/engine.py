"""One training run: load the starting model and data, train with trl (SFTTrainer, DPOTrainer or
GRPOTrainer, + peft LoRA), stream protocol lines, checkpoint, pause and resume, save the final model
and ``result.csv``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.jobs.metrics import row, to_csv
from service.training import checkpoints, tracking
from service.training.dpo import Preference, drop_reference_adapter
from service.training.errors import TRAINING_FAILED, TrainingError
from service.training.methods import Method, MetricNames, rounded
from service.training.models import MODEL_META, load_start, resolve
from service.training.protocol import Emitter
from service.training.sft import Supervised
from service.training.spec import EVAL_MAX_EXAMPLES, KEEP_CHECKPOINTS, MAX_DEFAULT_SEQ_LENGTH, TrainSpec

log = logging.getLogger(__name__)

RESULT_FILE = "result.csv"


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


def method_of(spec: TrainSpec) -> Method:
    if spec.method == "dpo":
        return Preference(beta=spec.hyperparameters.beta)
    if spec.method == "reinforcement":
        from service.training.reinforcement import Reinforcement

        assert spec.grader is not None  # TrainSpec.from_dict requires it
        return Reinforcement(spec.grader, spec.python_grader, spec.hyperparameters)
    return Supervised()


class Pause:
    """A pause request: SIGUSR1 (``signalled``, answered by the child's signal handler) or the
    spec's control file. Honoured at the next step boundary, after a checkpoint."""

    def __init__(self, signalled: Callable[[], bool], control_file: Path) -> None:
        self.signalled = signalled
        self.control_file = control_file

    def requested(self) -> bool:
        return self.signalled() or self.control_file.is_file()

    def consume_file(self) -> None:
        """The process ends after a pause or a finish: only the file outlives it."""
        self.control_file.unlink(missing_ok=True)


def _make_callback(
    emitter: Emitter,
    resumed_from: int | None,
    metrics: MetricNames,
    pause: Pause,
    publish_to: Path | None = None,
) -> Any:
    from transformers import TrainerCallback

    class ProtocolCallback(TrainerCallback):  # type: ignore[misc]
        """Turns the trainer's logs and saves into protocol lines; stops at a step boundary on pause."""

        def __init__(self) -> None:
            self.started = time.monotonic()
            self.start_step = 0
            self.pending: dict[str, Any] | None = None
            self.last: dict[str, Any] = {}
            self.paused_at: int | None = None

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

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # The step's log, evaluation and this save follow in the same step, then the loop ends;
            # a request after the last step changes nothing (the run finishes).
            if pause.requested() and state.global_step < state.max_steps:
                control.should_save = True
                control.should_training_stop = True
                self.paused_at = state.global_step

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
                    **metrics.train(logs),
                    **metrics.evaluation(None),
                    "tokens_per_s": rounded(logs.get("num_tokens", 0) / elapsed) if elapsed > 0 else None,
                    "eta_s": rounded(per_step * (state.max_steps - state.global_step)) if per_step else None,
                    "epoch": rounded(state.epoch),
                }
                if not control.should_evaluate:
                    self._flush()
            elif "eval_loss" in logs and self.pending is not None:
                self.pending.update(metrics.evaluation(logs))
                self._flush()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not path.is_dir():
                return
            saved = self.checkpoint_metrics()
            checkpoints.mark_complete(path, saved)
            if publish_to is not None:  # before the message: the checkpoint model is there once listed
                path = checkpoints.publish(path, publish_to, KEEP_CHECKPOINTS)
            emitter.emit("checkpoint", step=state.global_step, path=str(path), metrics=saved)

        def checkpoint_metrics(self) -> dict[str, Any]:
            return {k: self.last.get(k) for k in ("step", *metrics.keys)}

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._flush()

    return ProtocolCallback()


def result_rows(
    log_history: list[dict[str, Any]], final_eval: dict[str, Any] | None, method: Method
) -> list[dict[str, Any]]:
    """Per-step rows with the method's result-file columns, from the trainer's log history."""
    columns = method.columns
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        current = rows.setdefault(step, {"step": step})
        if "loss" in entry:
            current.update(method.metrics.train(entry))
        if "eval_loss" in entry:
            current.update(method.metrics.evaluation(entry))
    ordered = [row(rows[s], columns) for s in sorted(rows) if "train_loss" in rows[s]]
    if ordered and final_eval:
        ordered[-1].update(method.metrics.evaluation(final_eval, "full_valid"))
    return ordered


@dataclass(frozen=True)
class RunHooks:
    """How a launcher other than the child process (Ray Train, ``service.training.ray_train``)
    runs this engine in one of several data-parallel workers.

    ``checkpoints_dir`` is this worker's own (the launcher persists checkpoints itself),
    ``resume_from`` the checkpoint the launcher restored, ``wrap_trainer`` gets the built trainer
    (to add callbacks, or wrap it) and returns the one to train. ``publish_to`` (the rank-0
    worker's: the spec's ``checkpoints_dir``) receives a copy of each checkpoint's model before
    the ``checkpoint`` message, the newest ``KEEP_CHECKPOINTS`` kept, as the process executor
    keeps them: the job's checkpoint models (``checkpoints.publish``). Only the world's rank-0
    process writes the final model and ``result.csv``.
    """

    checkpoints_dir: Path
    resume_from: Path | None = None
    wrap_trainer: Callable[[Any], Any] = lambda trainer: trainer
    publish_to: Path | None = None


def _save_final(trainer: Any, tokenizer: Any, spec: TrainSpec, base_model: str) -> Path:
    """Write the adapter (or full weights) and tokenizer next to the final dir, then rename."""
    final = spec.model_dir
    tmp = spec.output_dir / f".model.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    drop_reference_adapter(trainer.model)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    meta = {
        "base_model": base_model,
        "method": spec.method,
        "training_type": spec.training_type,
        "from_model": str(spec.from_model) if spec.from_model else None,
        "job_id": spec.job_id,
    }
    (tmp / MODEL_META).write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _shared_args(
    spec: TrainSpec, checkpoints_dir: Path, device: str, max_length: int, evaluate: bool
) -> dict[str, Any]:
    """``TrainingArguments`` every method takes (the documented fixed settings)."""
    hp = spec.hyperparameters
    return {
        "output_dir": str(checkpoints_dir),
        "per_device_train_batch_size": hp.batch_size,
        "per_device_eval_batch_size": hp.batch_size,
        "num_train_epochs": hp.n_epochs,
        "max_steps": hp.max_steps or -1,
        "learning_rate": hp.effective_learning_rate(spec.training_type, spec.method),
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "seed": hp.seed,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": hp.checkpoint_every,
        "save_total_limit": KEEP_CHECKPOINTS,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": hp.checkpoint_every,
        "max_length": max_length,
        "gradient_checkpointing": False,
        "use_cpu": device == "cpu",
        "dataloader_pin_memory": device == "cuda",
        "dataloader_num_workers": 0,
        "report_to": spec.integrations.report_to or "none",  # logs into tracking's open runs
        "disable_tqdm": True,
        "log_level": "warning",
        **precision(device),
    }


def tracked_hyperparameters(
    spec: TrainSpec, max_length: int, base_model: str, continues_adapter: bool = False
) -> dict[str, Any]:
    """What the job's tracker runs record as its hyperparameters (beside the trainer's arguments);
    ``lora_*`` only where they apply (a continued adapter keeps its own configuration)."""
    hp = spec.hyperparameters
    out: dict[str, Any] = {
        "job_id": spec.job_id,
        "method": spec.method,
        "training_type": spec.training_type,
        "base_model": base_model,
        "n_epochs": hp.n_epochs,
        "batch_size": hp.batch_size,
        "learning_rate": hp.effective_learning_rate(spec.training_type, spec.method),
        "learning_rate_multiplier": hp.learning_rate_multiplier,
        "max_seq_length": max_length,
        "checkpoint_every": hp.checkpoint_every,
        "seed": hp.seed,
    }
    if spec.training_type == "lora" and not continues_adapter:
        out.update(lora_rank=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout)
    if spec.method == "dpo":
        out["beta"] = hp.beta
    if hp.max_steps:
        out["max_steps"] = hp.max_steps
    return out


def _peft_config(spec: TrainSpec, continues_adapter: bool) -> Any:
    """A new LoRA adapter; ``None`` for full fine-tuning or when an adapter is continued (its own
    configuration applies, so ``lora_*`` hyperparameters have no effect then)."""
    if spec.training_type != "lora" or continues_adapter:
        return None
    from peft import LoraConfig

    hp = spec.hyperparameters
    return LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def train(
    spec: TrainSpec,
    emitter: Emitter,
    pause_signalled: Callable[[], bool] = lambda: False,
    hooks: RunHooks | None = None,
) -> None:
    """Run one training job to the end (``finished``) or to a pause (``paused``), emitting protocol
    lines; raises ``TrainingError``."""
    hp = spec.hyperparameters
    method = method_of(spec)
    pause = Pause(pause_signalled, spec.pause_file)
    resolve(spec.base_model)  # a missing model fails before the slow imports
    setup_torch(spec.threads)
    device = pick_device(spec.device)
    start = load_start(spec.base_model, spec.from_model, spec.cache_dir, spec.training_type == "lora")
    tokenizer = start.tokenizer
    context = model_context(start.model, tokenizer)
    max_length = min(hp.max_seq_length or MAX_DEFAULT_SEQ_LENGTH, context)
    train_examples = method.load(spec.train_file, tokenizer, max_length, "training file")
    valid_examples = (
        method.load(spec.validation_file, tokenizer, max_length, "validation file")
        if spec.validation_file
        else []
    )

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

    from transformers import set_seed

    # trl creates the LoRA adapter before the Trainer seeds anything: without this its initial
    # weights differ from run to run and a job cannot be re-run exactly.
    set_seed(hp.seed)
    callback = _make_callback(
        emitter,
        checkpoints.step_of(resume_from) if resume_from else None,
        method.metrics,
        pause,
        hooks.publish_to if hooks else None,
    )
    tracked = tracked_hyperparameters(spec, max_length, start.base_model, start.continues_adapter)
    with tracking.reporting(spec.integrations, spec.job_id, spec.output_dir, tracked) as runs:
        trainer = method.trainer(
            model=start.model,
            tokenizer=tokenizer,
            args=_shared_args(spec, checkpoints_dir, device, max_length, evaluate=bool(valid_examples)),
            train=train_examples,
            valid=valid_examples[:EVAL_MAX_EXAMPLES] or None,
            peft_config=_peft_config(spec, start.continues_adapter),
            callbacks=[callback],
        )
        if hooks:
            trainer = hooks.wrap_trainer(trainer)
        started = time.monotonic()
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        runtime = time.monotonic() - started
        if callback.paused_at is not None:
            runs.outcome = "paused"
            pause.consume_file()
            step = callback.paused_at
            emitter.emit(
                "paused",
                step=step,
                path=str(checkpoints_dir / f"checkpoint-{step}"),
                metrics=callback.checkpoint_metrics(),
            )
            return
        pause.consume_file()  # a request that came after the last step: the run finished instead
        final_eval = trainer.evaluate(eval_dataset=method.dataset(valid_examples)) if valid_examples else None
    if not trainer.is_world_process_zero():
        return  # the other data-parallel workers took part in training and evaluation only
    model_dir = _save_final(trainer, tokenizer, spec, start.base_model)
    rows = result_rows(trainer.state.log_history, final_eval, method)
    columns = method.columns
    (spec.output_dir / RESULT_FILE).write_text(to_csv(rows, columns), encoding="utf-8")
    peak = None
    if device == "cuda":
        import torch

        peak = int(torch.cuda.max_memory_allocated())
    emitter.emit(
        "finished",
        model_dir=str(model_dir),
        steps=int(output.global_step),
        trained_tokens=int(method.tokens(train_examples) * (trainer.state.epoch or 0)),
        train_runtime_s=round(runtime, 3),
        result_file=str(spec.output_dir / RESULT_FILE),
        **method.metrics.evaluation(final_eval, "full_valid"),
        peak_gpu_memory_bytes=peak,
    )
