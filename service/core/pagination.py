"""Cursor pagination over an in-memory list, for short lists kept whole (checkpoints, events)."""

from __future__ import annotations

from typing import Any


def page_list(
    items: list[dict[str, Any]], after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The ``limit`` items after the one whose id is ``after`` (an unknown cursor: an empty page)."""
    start = 0
    if after is not None:
        ids = [i["id"] for i in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    return items[start : start + limit], len(items) > start + limit
