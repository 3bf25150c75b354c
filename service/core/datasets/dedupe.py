"""A compact digest → first-line table for duplicate detection: 12 bytes a slot, no objects a row."""

from __future__ import annotations

from array import array
from hashlib import blake2b


def digest(data: bytes) -> int:
    """An 8-byte blake2b digest as an int (never 0: 0 marks an empty slot)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little") or 1


class DigestIndex:
    """Open-addressing hash table in two flat arrays; a Python dict would cost ~100 bytes a row."""

    def __init__(self, capacity: int = 4096) -> None:
        self._cap = capacity
        self._keys = array("Q", [0]) * capacity
        self._lines = array("I", [0]) * capacity
        self._n = 0

    @classmethod
    def for_rows(cls, rows: int) -> DigestIndex:
        """A table that holds `rows` digests without growing (it still grows past them)."""
        return cls(max(4096, rows * 4 // 3 + 1))

    def __len__(self) -> int:
        return self._n

    # Any capacity, not only powers of two (a modulo instead of a mask), so a table sized for a
    # file's rows is no bigger than it needs to be.
    def setdefault(self, key: int, line: int) -> int:
        """Insert `key` with `line` unless present; return the first line seen, or 0 if new."""
        keys = self._keys
        cap = self._cap
        i = key % cap
        while True:
            k = keys[i]
            if k == 0:
                keys[i] = key
                self._lines[i] = line
                self._n += 1
                if self._n * 4 > cap * 3:  # linear probing stays short up to 3/4 full
                    self._grow()
                return 0
            if k == key:
                return self._lines[i]
            i += 1
            if i == cap:
                i = 0

    def get(self, key: int) -> int:
        keys = self._keys
        cap = self._cap
        i = key % cap
        while True:
            k = keys[i]
            if k == 0:
                return 0
            if k == key:
                return self._lines[i]
            i += 1
            if i == cap:
                i = 0

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        self._cap = self._cap * 3 // 2
        self._keys = array("Q", [0]) * self._cap
        self._lines = array("I", [0]) * self._cap
        self._n = 0
        for k, line in zip(old_keys, old_lines, strict=True):
            if k:
                self.setdefault(k, line)
