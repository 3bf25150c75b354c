"""The chunked line reader splits exactly as LF does, whatever the chunk edges, and skips over-long lines."""

from __future__ import annotations

import io
import random

import pytest

from service.core.datasets import reader


@pytest.mark.parametrize("seed", range(200))
def test_lines_match_a_plain_split(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    pieces = [b"a", b"bb", b"\n", b"ccc\n", b"\r\n", b"x" * rng.randint(0, 40)]
    data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
    limit = rng.randint(5, 30)
    # the reader relies on a chunk being shorter than the line limit, as 1 MiB is to 32 MiB
    monkeypatch.setattr(reader.Lines, "READ_BYTES", rng.randint(1, limit - 1))
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", limit)
    lines = reader.Lines(io.BytesIO(data))
    got = list(lines)
    *ended, last = data.split(b"\n")
    expected: list[bytes | int] = [s if len(s) < limit else len(s) + 1 for s in ended]
    if last:
        expected.append(last if len(last) < limit else len(last))
    assert got == expected
    assert lines.terminated == (not last or len(last) >= limit)
