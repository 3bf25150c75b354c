"""SPEC.json of a training run and the documented defaults of every hyperparameter."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core.datasets.reinforcement import DEFAULT_MAX_COMPLETION_LENGTH, num_generations
from service.training.errors import TRAINING_FAILED, TrainingError
from service.training.tracking import Integrations

# Documented in docs/local-trainer.md; change both together.
DEFAULT_N_EPOCHS = 3
DEFAULT_BATCH_SIZE = 4
DEFAULT_LR_LORA = 2e-4
DEFAULT_LR_FULL = 2e-5
# DPO moves a model that already answers well: smaller steps (full: trl's default).
DEFAULT_DPO_LR_LORA = 5e-5
DEFAULT_DPO_LR_FULL = 1e-6
DEFAULT_BETA = 0.1
# Reinforcement (GRPO): full fine-tuning at trl's 1e-6; LoRA barely moves at that rate, so an
# order of magnitude below supervised LoRA (policy-gradient steps are noisier). beta is the KL
# coefficient here (DeepSeekMath's GRPO value), 0 allowed.
DEFAULT_RL_LR_LORA = 2e-5
DEFAULT_RL_LR_FULL = 1e-6
DEFAULT_RL_BETA = 0.04
DEFAULT_LORA_RANK = 16
DEFAULT_LORA_ALPHA = 32
DEFAULT_LORA_DROPOUT = 0.05
MAX_DEFAULT_SEQ_LENGTH = 2048
DEFAULT_CHECKPOINT_EVERY = 50
DEFAULT_SEED = 42
KEEP_CHECKPOINTS = 3
EVAL_MAX_EXAMPLES = 64

METHODS = ("supervised", "dpo", "reinforcement")  # OpenAI's `method.type`
TRAINING_TYPES = ("lora", "full")
# Older specs put the training type in `method`; they still load, as supervised runs.
LEGACY_METHODS = TRAINING_TYPES
DEVICES = ("auto", "cpu", "cuda")
PAUSE_FILE = "PAUSE"


@dataclass(frozen=True)
class Hyperparameters:
    """Resolved hyperparameters; ``None`` means "decided once the model is known"."""

    n_epochs: int = DEFAULT_N_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float | None = None
    learning_rate_multiplier: float = 1.0
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: int = DEFAULT_LORA_ALPHA
    lora_dropout: float = DEFAULT_LORA_DROPOUT
    max_seq_length: int | None = None
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    seed: int = DEFAULT_SEED
    max_steps: int | None = None
    beta: float = DEFAULT_BETA
    # Reinforcement only (OpenAI's names, then the local trainer's).
    compute_multiplier: float = 1.0
    eval_interval: int | None = None
    eval_samples: int | None = None
    max_completion_length: int = DEFAULT_MAX_COMPLETION_LENGTH

    def effective_learning_rate(self, training_type: str, method: str = "supervised") -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        if method == "dpo":
            base = DEFAULT_DPO_LR_LORA if training_type == "lora" else DEFAULT_DPO_LR_FULL
        elif method == "reinforcement":
            base = DEFAULT_RL_LR_LORA if training_type == "lora" else DEFAULT_RL_LR_FULL
        else:
            base = DEFAULT_LR_LORA if training_type == "lora" else DEFAULT_LR_FULL
        return base * self.learning_rate_multiplier

    @property
    def num_generations(self) -> int:
        """Answers sampled per prompt (GRPO's group): compute_multiplier x 4, at least 2."""
        return num_generations(self.compute_multiplier)


_INT_FIELDS = (
    "n_epochs",
    "batch_size",
    "lora_rank",
    "lora_alpha",
    "max_seq_length",
    "checkpoint_every",
    "seed",
    "max_steps",
    "eval_interval",
    "eval_samples",
    "max_completion_length",
)
_FLOAT_FIELDS = ("learning_rate", "learning_rate_multiplier", "lora_dropout", "beta", "compute_multiplier")
_POSITIVE = (
    *(name for name in _INT_FIELDS if name != "seed"),
    "learning_rate",
    "learning_rate_multiplier",
    "beta",
    "compute_multiplier",
)
_ONLY = {
    "beta": ("dpo", "reinforcement"),
    **dict.fromkeys(
        ("compute_multiplier", "eval_interval", "eval_samples", "max_completion_length"), ("reinforcement",)
    ),
}


def _hyperparameters(raw: dict[str, Any], method: str) -> Hyperparameters:
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None or value == "auto":
            continue  # OpenAI's "auto" means "use the default"
        methods = _ONLY.get(name)
        if methods and method not in methods:
            which = " and ".join(methods) + (" methods" if len(methods) > 1 else " method")
            raise TrainingError(TRAINING_FAILED, f"hyperparameter {name} applies to the {which} only")
        if name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise TrainingError(
                    TRAINING_FAILED, f"hyperparameter {name} must be an integer, got {value!r}"
                )
            values[name] = int(value)
        elif name in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TrainingError(TRAINING_FAILED, f"hyperparameter {name} must be a number, got {value!r}")
            values[name] = float(value)
        else:
            raise TrainingError(TRAINING_FAILED, f"unknown hyperparameter {name!r}")
        # GRPO's KL coefficient may be 0 (no reference model); DPO's beta may not.
        zero_ok = name == "beta" and method == "reinforcement"
        if name in _POSITIVE and (values[name] < 0 if zero_ok else values[name] <= 0):
            raise TrainingError(TRAINING_FAILED, f"hyperparameter {name} must be positive, got {value!r}")
    if not 0 <= values.get("lora_dropout", 0.0) < 1:
        raise TrainingError(TRAINING_FAILED, "hyperparameter lora_dropout must be in [0, 1)")
    if method == "reinforcement":
        values.setdefault("beta", DEFAULT_RL_BETA)
    return Hyperparameters(**values)


@dataclass(frozen=True)
class TrainSpec:
    """One training run, as written by the worker into SPEC.json (contract in docs/local-trainer.md)."""

    job_id: str
    base_model: str
    train_file: Path
    output_dir: Path
    method: str = "supervised"
    training_type: str = "lora"
    validation_file: Path | None = None
    resume: bool = False
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    device: str = "auto"
    threads: int | None = None
    cache_dir: Path | None = None  # optional: where dequantized GGUF models are cached
    from_model: Path | None = None  # optional: a Tuneline model directory to continue training
    integrations: Integrations = field(default_factory=Integrations)  # trackers (service.training.tracking)
    # Reinforcement: OpenAI's grader JSON (the reward), and the python grader's limits when the
    # operator enabled python graders (None: a python grader is refused).
    grader: dict[str, Any] | None = None
    python_grader: dict[str, float] | None = None

    @property
    def checkpoints_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def pause_file(self) -> Path:
        """Creating this file asks the run to pause, like SIGUSR1 (for executors that cannot signal)."""
        return self.output_dir / PAUSE_FILE

    @property
    def model_dir(self) -> Path:
        return self.output_dir / "model"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainSpec:
        try:
            method = raw.get("method") or "supervised"
            training_type = raw.get("training_type") or "lora"
            device = raw.get("device") or "auto"
            if method in LEGACY_METHODS:
                if raw.get("training_type") not in (None, method):
                    raise TrainingError(
                        TRAINING_FAILED, f"method {method!r} contradicts training_type {training_type!r}"
                    )
                method, training_type = "supervised", method
            if method not in METHODS:
                raise TrainingError(TRAINING_FAILED, f"method must be one of {METHODS}, got {method!r}")
            if training_type not in TRAINING_TYPES:
                raise TrainingError(
                    TRAINING_FAILED, f"training_type must be one of {TRAINING_TYPES}, got {training_type!r}"
                )
            if device not in DEVICES:
                raise TrainingError(TRAINING_FAILED, f"device must be one of {DEVICES}, got {device!r}")
            threads = raw.get("threads")
            if threads is not None and (not isinstance(threads, int) or threads < 1):
                raise TrainingError(TRAINING_FAILED, f"threads must be a positive integer, got {threads!r}")
            validation = raw.get("validation_file")
            cache_dir = raw.get("cache_dir")
            from_model = raw.get("from_model")
            grader = raw.get("grader")
            if (method == "reinforcement") != isinstance(grader, dict):
                raise TrainingError(
                    TRAINING_FAILED,
                    "a grader (an object) is required by, and only by, the reinforcement method",
                )
            python_grader = raw.get("python_grader")
            if python_grader is not None and not isinstance(python_grader, dict):
                raise TrainingError(
                    TRAINING_FAILED, f"python_grader must be an object, got {python_grader!r}"
                )
            return cls(
                job_id=str(raw.get("job_id") or ""),
                base_model=str(raw["base_model"]),
                train_file=Path(raw["train_file"]),
                output_dir=Path(raw["output_dir"]),
                method=method,
                training_type=training_type,
                validation_file=Path(validation) if validation else None,
                resume=bool(raw.get("resume", False)),
                hyperparameters=_hyperparameters(dict(raw.get("hyperparameters") or {}), method),
                device=device,
                threads=threads,
                cache_dir=Path(cache_dir) if cache_dir else None,
                from_model=Path(from_model) if from_model else None,
                integrations=Integrations.from_dict(raw.get("integrations")),
                grader=grader,
                python_grader=python_grader,
            )
        except KeyError as exc:
            raise TrainingError(TRAINING_FAILED, f"spec is missing {exc.args[0]!r}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainSpec:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainingError(TRAINING_FAILED, f"cannot read spec {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise TrainingError(TRAINING_FAILED, f"spec {path} is not a JSON object")
        return cls.from_dict(raw)
