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
# DPO: loss plus trl's reward margin (chosen minus rejected reward) and preference accuracy (share
# of pairs whose chosen reward is higher), per step and on the validation file.
DPO_METRIC_COLUMNS = (
    "step",
    "train_loss",
    "train_reward_margin",
    "train_preference_accuracy",
    "valid_loss",
    "valid_reward_margin",
    "valid_preference_accuracy",
    "full_valid_loss",
    "full_valid_reward_margin",
    "full_valid_preference_accuracy",
)
COLUMNS_BY_METHOD = {"supervised": METRIC_COLUMNS, "dpo": DPO_METRIC_COLUMNS}


def row(data: Mapping[str, Any], columns: tuple[str, ...] = METRIC_COLUMNS) -> dict[str, Any]:
    """A metrics row from any mapping that carries (some of) the columns."""
    return {name: data.get(name) for name in columns}


def to_csv(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...] = METRIC_COLUMNS) -> str:
    """Rows as CSV with OpenAI's result-file columns (or a method's); missing values are empty cells."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def plot_png(rows: Iterable[Mapping[str, Any]], title: str) -> bytes:
    """The loss curve as a PNG: train and valid loss by step above, token accuracy below.

    matplotlib is imported here, not at module level, so the API starts without it; the
    object-oriented API (``Figure`` + the Agg canvas) keeps no global pyplot state, so
    concurrent requests in threads do not share a figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = [r for r in rows if r.get("step") is not None]

    def series(name: str) -> tuple[list[float], list[float]]:
        points = [(float(r["step"]), float(r[name])) for r in data if r.get(name) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: an automatic layout engine would triple the drawing time.
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.09, hspace=0.08)
    loss_ax, acc_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    fig.suptitle(title)
    for name, label in (("train_loss", "train loss"), ("valid_loss", "valid loss")):
        xs, ys = series(name)
        if xs:
            loss_ax.plot(xs, ys, label=label, marker="." if len(xs) < 50 else None)
    for name, label in (
        ("train_mean_token_accuracy", "train token accuracy"),
        ("valid_mean_token_accuracy", "valid token accuracy"),
    ):
        xs, ys = series(name)
        if xs:
            acc_ax.plot(xs, ys, label=label, marker="." if len(xs) < 50 else None)
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("token accuracy")
    acc_ax.set_xlabel("step")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    if not data:
        loss_ax.text(0.5, 0.5, "no metrics yet", ha="center", va="center", transform=loss_ax.transAxes)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
