"""The training child's errors, each with the protocol's snake_case code (see docs/local-trainer.md)."""

from __future__ import annotations

MODEL_NOT_FOUND = "model_not_found"
MODEL_LOAD_FAILED = "model_load_failed"
EXAMPLE_TOO_LONG = "example_too_long"
INVALID_TRAINING_FILE = "invalid_training_file"
OUT_OF_MEMORY = "out_of_memory"
TRAINING_FAILED = "training_failed"


class TrainingError(Exception):
    """A failure the child reports as ``{"type": "error", "code": ..., "message": ...}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_out_of_memory(exc: BaseException) -> bool:
    """``MemoryError``, ``torch.cuda.OutOfMemoryError`` or an allocator refusal (CPU or GPU)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text
