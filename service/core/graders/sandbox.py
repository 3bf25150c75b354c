"""The ``python`` grader's sandbox: the caller's ``grade(sample, item)`` in a fresh, limited, offline process.

Each run is a new interpreter in isolated mode (``python -I``: no environment variables, no user
site, no working directory on the path) started with an empty environment in a throwaway directory,
inside a new network namespace (``unshare --net``; only a loopback that is down, so no connection
can be made), as its own process group. Before the caller's code is read, the child lowers its own
limits: CPU seconds (``RLIMIT_CPU``), address space (``RLIMIT_AS``), file size (``RLIMIT_FSIZE``,
which also caps what it prints, since output goes to files) and no core dumps. The parent waits a
wall-clock limit, then kills the whole group. A grader that loops, allocates too much, crashes or
tries the network ends as a reported error (``PythonOutcome.error``), never as a hung or dead worker.
Where no network namespace can be made, python graders are refused rather than run unisolated.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's limit on a python grader's source
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # the file-size limit: what it prints and any file it writes
DETAIL_CHARS = 2000

# Runs in the child before the caller's code: limits first, then stdout moved aside so that
# print() in the grader cannot be mistaken for the result, which goes to the original stdout.
_BOOTSTRAP = r"""
import json, math, os, resource, sys, traceback
cpu_s, memory, fsize = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
result = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
payload = json.loads(sys.stdin.read())
sys.stdin.close()
try:
    namespace = {"__name__": "grader"}
    exec(compile(payload["source"], "grader.py", "exec"), namespace)
    value = namespace["grade"](payload["sample"], payload["item"])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"grade() must return a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"grade() returned {value}")
    out = {"score": float(value)}
except MemoryError:
    out = {"error": "memory_limit", "details": "MemoryError: the grader went over its memory limit"}
except BaseException:
    out = {"error": "runtime_error", "details": traceback.format_exc(limit=-3)}
result.write(json.dumps(out))
result.flush()
"""


@dataclass(frozen=True)
class PythonLimits:
    """Limits on one python grader run (settings ``TUNELINE_PYTHON_GRADER_*``)."""

    timeout_s: float = 30.0
    memory_bytes: int = 2 * 1024**3  # OpenAI's 2 GB

    @property
    def cpu_s(self) -> int:
        return max(1, math.ceil(self.timeout_s))


@dataclass(frozen=True)
class PythonOutcome:
    """A score, or an error: ``runtime_error``, ``memory_limit``, ``cpu_limit``, ``timeout``, ``crashed``."""

    score: float | None
    error: str | None = None
    details: str | None = None


class SandboxUnavailable(RuntimeError):
    """This host cannot isolate a python grader (no network namespace)."""


def check_source(source: str) -> str | None:
    """Why ``source`` cannot be a grader (size, syntax, no ``grade``), or None; nothing is run."""
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        return f"source is larger than {MAX_SOURCE_BYTES // 1024} kB"
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"source does not parse: {exc}"
    if not any(isinstance(node, ast.FunctionDef) and node.name == "grade" for node in tree.body):
        return "source must define a top-level function grade(sample, item)"
    return None


@lru_cache(maxsize=1)
def isolation_prefix() -> tuple[str, ...]:
    """The command that puts a child in a new network namespace; raise SandboxUnavailable if none works."""
    candidates = [("unshare", "--user", "--map-root-user", "--net"), ("unshare", "--net")]
    for prefix in candidates:
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    raise SandboxUnavailable(
        "this host cannot give a python grader its own network namespace (unshare --net fails), "
        "so python graders cannot be run without network access"
    )


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - DETAIL_CHARS))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def run_python(source: str, sample: dict[str, Any], item: Any, limits: PythonLimits) -> PythonOutcome:
    """Run ``grade(sample, item)`` from ``source`` in the sandbox and say how it ended."""
    prefix = isolation_prefix()
    payload = json.dumps({"source": source, "sample": sample, "item": item}, ensure_ascii=False)
    argv = [*prefix, sys.executable, "-I", "-c", _BOOTSTRAP]
    argv += [str(limits.cpu_s), str(limits.memory_bytes), str(MAX_OUTPUT_BYTES)]
    with tempfile.TemporaryDirectory(prefix="tuneline-grader-") as workdir:
        result_path, log_path = Path(workdir, "result.json"), Path(workdir, "output.log")
        with result_path.open("wb") as result, log_path.open("wb") as log:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=result,
                stderr=log,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir},
                start_new_session=True,  # its own process group: a timeout kills what it forked too
            )
            started = time.monotonic()
            try:
                child.communicate(payload.encode("utf-8"), timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(child)
                return PythonOutcome(
                    None, "timeout", f"The grader ran longer than {limits.timeout_s:g} s and was stopped."
                )
            finally:
                _kill_group(child)  # anything it left running in its group
            elapsed = time.monotonic() - started
        return _outcome(child.returncode, result_path, log_path, limits, elapsed)


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group may be gone already
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _outcome(
    code: int, result_path: Path, log_path: Path, limits: PythonLimits, elapsed: float
) -> PythonOutcome:
    try:
        reported = json.loads(result_path.read_text("utf-8") or "null")
    except (OSError, ValueError):
        reported = None
    if isinstance(reported, dict) and isinstance(reported.get("score"), float):
        return PythonOutcome(reported["score"])
    if isinstance(reported, dict) and isinstance(reported.get("error"), str):
        details = str(reported.get("details") or "")[-DETAIL_CHARS:]
        if reported["error"] == "memory_limit":
            details = f"{details} ({limits.memory_bytes // 1024**2} MB)"
        return PythonOutcome(None, reported["error"], details)
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and elapsed >= limits.cpu_s * 0.5:
        return PythonOutcome(
            None, "cpu_limit", f"The grader used more than {limits.cpu_s} s of CPU time and was stopped."
        )
    log_tail = _tail(log_path)
    return PythonOutcome(
        None, "crashed", f"The grader process ended with exit status {code}. {log_tail}".strip()
    )
