"""The batch form of the heuristics gives exactly what one row at a time gives, on any data."""

from __future__ import annotations

import random

import pytest

from service.core.datasets.heuristics import Heuristics

ALPHABET = ["a", "B", "中", " ", ".", "\n", "###", " ->", "END", "。", "x", "\x00", ". ", "! "]


def _state(h: Heuristics) -> dict[str, object]:
    fields = {
        f"{name}.{slot}": getattr(getattr(h, name), slot)
        for name in ("prompt", "completion")
        for slot in getattr(h, name).__slots__
        if slot != "_pending"
    }
    return {**fields, "multi": h.multi_sentence, "classes": h.classes, "overflow": h.classes_overflow}


@pytest.mark.parametrize("seed", range(40))
def test_add_many_equals_add(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(4000, 9000) if seed % 10 == 0 else rng.randint(0, 400)
    alphabet = ALPHABET if seed % 2 else ALPHABET[:-3]  # with and without NUL and sentence marks
    prompts = ["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(n)]
    completions = ["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(n)]
    if seed % 3 == 0:
        prompts = ["same"] * n
    one, many = Heuristics(), Heuristics()
    for p, c in zip(prompts, completions, strict=True):
        one.add(p, c)
    i = 0
    while i < n:
        k = rng.randint(1, 700)
        many.add_many(prompts[i : i + k], completions[i : i + k])
        i += k
    assert _state(many) == _state(one)
