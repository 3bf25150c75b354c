"""Per-step training metrics: OpenAI's column names (DESIGN §9) and their CSV form."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

METRIC_COLUMNS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def row(data: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics row from any mapping that carries (some of) the columns."""
    return {name: data.get(name) for name in METRIC_COLUMNS}


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as CSV with OpenAI's result-file columns; missing values are empty cells."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
