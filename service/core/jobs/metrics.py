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
# Reinforcement: the policy loss, the mean grader reward of the sampled answers and its spread
# (standard deviation), their mean length in tokens and the KL divergence from the reference (with
# a KL coefficient beta of 0 there is no reference and no KL); for a `multi` grader also each named
# grader's mean score (`<prefix>_grader_<name>`).
REINFORCEMENT_FIGURES = ("reward_mean", "reward_std", "completion_length", "kl")


def reinforcement_columns(grader_keys: Iterable[str] = ()) -> tuple[str, ...]:
    """Reinforcement's columns; ``grader_keys``: the names of a ``multi`` grader's graders (in
    sorted order: a stored job's JSON does not keep the order they were given in)."""
    figures = (*REINFORCEMENT_FIGURES, *(f"grader_{key}" for key in sorted(grader_keys)))
    return (
        "step",
        *(f"{prefix}_{name}" for prefix in ("train", "valid", "full_valid") for name in ("loss", *figures)),
    )


def _multi_keys(method: Mapping[str, Any]) -> tuple[str, ...]:
    grader = (method.get("reinforcement") or {}).get("grader") or {}
    graders = grader.get("graders") if isinstance(grader, Mapping) and grader.get("type") == "multi" else None
    if isinstance(graders, Mapping) and isinstance(graders.get("type"), str):
        return (str(graders.get("name") or "grader"),)  # the SDK's single-grader form (graders.spec)
    return tuple(str(key) for key in graders) if isinstance(graders, Mapping) else ()


def columns_for(method: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The metric columns of a job's ``method`` (OpenAI's object; none means supervised)."""
    kind = str((method or {}).get("type") or "supervised")
    if kind == "reinforcement":
        return reinforcement_columns(_multi_keys(method or {}))
    return COLUMNS_BY_METHOD.get(kind, METRIC_COLUMNS)


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


def plot_png(
    rows: Iterable[Mapping[str, Any]], title: str, columns: tuple[str, ...] = METRIC_COLUMNS
) -> bytes:
    """The loss curve as a PNG: train and valid loss by step above, token accuracy below.

    With the DPO ``columns`` the lower panel shows preference accuracy and reward margin instead;
    with reinforcement's, the mean reward and each named grader's score (the reward's spread,
    answer lengths and KL are in the JSON and CSV).

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
    # The lower panel: every per-step train/valid figure that is not a loss (token accuracy; for
    # DPO, preference accuracy and reward margin; for reinforcement, the 0-1 scores only).
    reinforcement = "train_reward_mean" in columns
    for name in columns:
        if reinforcement and not name.endswith("_reward_mean") and "_grader_" not in name:
            continue
        if name.startswith(("train_", "valid_")) and not name.endswith("_loss"):
            xs, ys = series(name)
            if xs:
                acc_ax.plot(xs, ys, label=name.replace("_", " "), marker="." if len(xs) < 50 else None)
    loss_ax.set_ylabel("loss")
    dpo = "train_reward_margin" in columns
    acc_ax.set_ylabel(
        "mean reward / grader scores"
        if reinforcement
        else ("preference accuracy / reward margin" if dpo else "token accuracy")
    )
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
