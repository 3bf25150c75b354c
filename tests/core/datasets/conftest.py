"""Fixtures for the dataset engine tests: where the sample data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


SAMPLE_DATA = REPO_ROOT / "tests" / "data"
BAD = SAMPLE_DATA / "bad"


@pytest.fixture
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture
def bad_dir(sample_data: Path) -> Path:
    return sample_data / "bad"
