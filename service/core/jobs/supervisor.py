"""A supervised child process: its own process group, JSON lines on stdout, stopped on demand.

The child dies with its parent (Linux ``PR_SET_PDEATHSIG``), so a worker killed with SIGKILL
leaves no training process behind to race the run that resumes the job.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("tuneline.supervisor")

PR_SET_PDEATHSIG = 1
_EOF = object()


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook that has the child SIGKILLed when its parent dies (Linux only).

    ``prctl`` is looked up here, in the parent: between fork and exec the hook only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


class Child:
    """One child process whose stdout carries one JSON object per line."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # its own process group: a stop reaches its helpers too
                preexec_fn=_die_with_parent_hook(),
            )
        self.log_path = log_path
        self._lines: queue.Queue[object] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"child-{self.proc.pid}", daemon=True)
        self._reader.start()
        self.bad_lines = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw)
        self._lines.put(_EOF)

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON object, or None when nothing came within ``timeout``.

        Raises EOFError once stdout is closed (the child exited or closed it).
        """
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _EOF:
            self._lines.put(_EOF)  # keep answering EOF
            raise EOFError
        assert isinstance(item, bytes)
        try:
            message = json.loads(item)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.bad_lines += 1  # a protocol bug in the child: log its size, never its content
            log.warning("ignored a non-protocol line on the child's stdout", extra={"bytes": len(item)})
            return None
        return message

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the child exits, or None if it is still running after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM the process group, then SIGKILL it after ``grace_s``; returns the exit code."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        # Anything the child forked into its group dies with it.
        self._signal(signal.SIGKILL)
        return int(self.proc.returncode)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stderr_tail(self, max_chars: int = 300) -> str:
        """The child's last non-empty stderr line (its final complaint), shortened."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(self.log_path.stat().st_size - 8192, 0))
                lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:max_chars] if lines else ""
