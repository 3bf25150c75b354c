"""Dataset preparation (issues 3 and 15): runs ``tests/bench/datasets_bench.py`` when present and
includes its markdown (full sizes add the peak-memory run on a 1 GB file)."""

from __future__ import annotations

import subprocess
import sys

from tests.bench.common import Options
from tests.support.procs import REPO

SCRIPT = REPO / "tests" / "bench" / "datasets_bench.py"
TIMEOUT_S = 1500  # 3 rounds of four contenders, then generating and preparing 1 GB


def run(opts: Options) -> str:
    head = ["## Dataset preparation (issues 3, 15)", ""]
    if not SCRIPT.exists():
        return "\n".join([*head, f"Skipped: `{SCRIPT.relative_to(REPO)}` does not exist.", ""])
    lines = 20_000 if opts.quick else 100_000
    args = [sys.executable, str(SCRIPT), "--lines", str(lines), "--runs", "3"]
    if not opts.quick:
        args += ["--memory-gb", "1.0"]
    try:
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "\n".join([*head, f"Not finished: `{' '.join(args[1:])}` ran past {TIMEOUT_S} s.", ""])
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return "\n".join(
            [
                *head,
                f"`tests/bench/datasets_bench.py` failed (exit {proc.returncode}):",
                "",
                "```",
                *tail,
                "```",
                "",
            ]
        )
    return "\n".join(
        [
            *head,
            f"Output of `{' '.join(args[1:]).replace(str(REPO) + '/', '')}` (median of 3 runs, each "
            "in a fresh process, the contenders taking turns):",
            "",
            proc.stdout.strip(),
            "",
        ]
    )
