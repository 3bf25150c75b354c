"""The digest table: first line per digest, any capacity, growing past its size."""

from __future__ import annotations

import random

import pytest

from service.core.datasets.dedupe import DigestIndex


@pytest.mark.parametrize("rows", [0, 1000, 5000])
def test_first_line_is_kept_through_growth(rows: int) -> None:
    rng = random.Random(rows)
    index = DigestIndex.for_rows(rows)
    keys = list({rng.getrandbits(64) | 1 for _ in range(30_000)})
    for line, key in enumerate(keys, 1):
        assert index.setdefault(key, line) == 0
    assert len(index) == len(keys)
    assert all(index.get(key) == line for line, key in enumerate(keys, 1))
    assert index.setdefault(keys[7], 10**6) == 8  # a duplicate answers the first line
    assert index.get(2) == 0
