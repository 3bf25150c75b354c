"""Public id generation (DESIGN §9 prefixes)."""

from __future__ import annotations

import secrets

PREFIXES = {
    "file": "file-",
    "job": "ftjob-",
    "event": "ftevent-",
    "checkpoint": "ftckpt-",
    "experiment": "exp-",
    "delivery": "dlv-",
    "key": "key-",
    "import": "imp-",
}


def new_id(kind: str) -> str:
    """A random, URL-safe id with the public prefix for ``kind``."""
    return PREFIXES[kind] + secrets.token_hex(12)


def has_prefix(kind: str, value: str) -> bool:
    return value.startswith(PREFIXES[kind])
