"""Fixtures for the dataset engine tests: where the shared sample data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_data() -> Path:
    for candidate in (REPO_ROOT / ".." / "shared" / "data", REPO_ROOT / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


SHARED_DATA = _shared_data()
BAD = SHARED_DATA / "bad"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def bad_dir(shared_data: Path) -> Path:
    return shared_data / "bad"
