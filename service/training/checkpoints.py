"""Checkpoint directories: a checkpoint counts only once its completion marker is written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "tuneline-complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int | None:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def mark_complete(path: Path, metrics: dict[str, Any]) -> None:
    """Written last, after the trainer has saved everything (weights, optimizer, state), via a
    rename so that the marker itself is never half-written."""
    tmp = path / f".{COMPLETE_MARKER}.tmp"
    tmp.write_text(json.dumps(metrics), encoding="utf-8")
    os.replace(tmp, path / COMPLETE_MARKER)


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(step_of(p), p) for p in root.iterdir() if p.is_dir()]
    return sorted((step, p) for step, p in found if step is not None)


def complete(root: Path) -> list[Path]:
    return [p for _, p in _checkpoints(root) if (p / COMPLETE_MARKER).is_file()]


def newest_complete(root: Path) -> Path | None:
    done = complete(root)
    return done[-1] if done else None


def remove_incomplete(root: Path) -> list[Path]:
    """Delete checkpoints a killed run left half-written (no marker); return them."""
    removed = [p for _, p in _checkpoints(root) if not (p / COMPLETE_MARKER).is_file()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def remove_all(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
