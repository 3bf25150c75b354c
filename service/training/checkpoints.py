"""Checkpoint directories: a checkpoint counts only once its completion marker is written."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "tuneline-complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# What a checkpoint holds only to resume training (optimizer, scheduler, RNG and AMP state): a
# published copy serves completions and exports, which read the weights and the trainer state.
RESUME_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


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


def publish(source: Path, root: Path, keep: int) -> Path:
    """Copy the complete checkpoint ``source`` to ``root/<its name>`` without its resume-only
    files (``RESUME_ONLY``), then keep only the newest ``keep`` complete checkpoints in ``root``;
    the copy's path.

    For a launcher that keeps the resumable checkpoints elsewhere (Ray Train's storage): the copy
    is the job's checkpoint model, where completions and exports look for it. It is written under
    a temporary name, marker last, and renamed, so a reader never sees half of it; a checkpoint of
    the same step (a run redone from an earlier one) is replaced.
    """
    target = root / source.name
    tmp = root / f".{source.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)

    def skipped(folder: str, names: list[str]) -> set[str]:
        if Path(folder) != source:
            return set()
        resume_only = {n for n in names if any(fnmatch.fnmatch(n, p) for p in RESUME_ONLY)}
        return resume_only | {COMPLETE_MARKER}  # the marker is copied last

    shutil.copytree(source, tmp, ignore=skipped)
    shutil.copy2(source / COMPLETE_MARKER, tmp / COMPLETE_MARKER)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    for old in complete(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target
