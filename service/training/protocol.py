"""The child's stdout protocol: one JSON object per line, nothing else on stdout."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from typing import IO, Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class Emitter:
    """Writes protocol lines to a private copy of the original stdout.

    ``claim_stdout`` moves file descriptor 1 onto stderr, so whatever a library prints (tqdm,
    warnings, C extensions) lands in the log and never corrupts the protocol stream.
    """

    def __init__(self, stream: IO[str], prefix: str = "") -> None:
        self._stream = stream
        self._prefix = prefix  # set where the stream is shared with other output (a Ray job's log)
        self._lock = threading.Lock()

    @classmethod
    def claim_stdout(cls) -> Emitter:
        sys.stdout.flush()
        stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(stream)

    def emit(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"type": kind, **_clean(fields)}, ensure_ascii=False, allow_nan=False)
        with self._lock:
            self._stream.write(self._prefix + line + "\n")
            self._stream.flush()
