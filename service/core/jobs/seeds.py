"""A job's ``seed`` (OpenAI's field): the caller's, or one Tuneline picks, so every job can be re-run.

OpenAI's job object always carries an integer seed, picked by the service when the request has
none; Tuneline does the same, stores it on the job and gives it to whatever trains the job.
"""

from __future__ import annotations

import secrets
from typing import Any

SEED_MAX = 2**31 - 1  # OpenAI's range: 0..2147483647
# The seed Tuneline used before it picked one: the local trainer's default and the data split's.
# Records stored before then (no seed) answer it (docs/local-trainer.md, "Seeds").
DEFAULT_SEED = 42


def pick() -> int:
    return secrets.randbelow(SEED_MAX + 1)


def seeded(seed: int | None, prepare: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
    """The job's seed and ``prepare`` options: a picked seed when none was given.

    The data split follows the caller's seed (``prepare.split.seed`` first); without one it kept
    ``DEFAULT_SEED``, and still does: a picked seed would give two otherwise identical jobs
    different held-out sets. That split seed is written into ``prepare`` so the job says it.
    """
    if seed is not None:
        return seed, prepare
    split = (prepare or {}).get("split")
    if split and "seed" not in split:
        prepare = {**(prepare or {}), "split": {**split, "seed": DEFAULT_SEED}}
    return pick(), prepare
