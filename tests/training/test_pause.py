"""Pause and resume on the tiny model: a run paused at a step boundary (SIGUSR1, or the control
file) and resumed ends with the same per-step metrics and result file as an uninterrupted run with
the same seed, for SFT (LoRA dropout on) and for DPO continuing an SFT adapter."""

from __future__ import annotations

import csv
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING, Child, ChildRun, TrainedRun, run_child, write_spec
from tests.training.conftest import dpo_from_sft_spec, sft_spec

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.training.checkpoints import COMPLETE_MARKER

pytestmark = pytest.mark.slow

# Protocol figures are rounded to 6 decimals. On the CPU with one thread every kernel is
# deterministic and the checkpoint restores weights, optimizer, scheduler, RNG states and the
# sampler position exactly, so the runs agree bit for bit (measured: difference 0.0); the
# tolerance only absorbs a rounding flip in the 6th decimal, and is far below step-to-step changes.
TOLERANCE = 1e-6


def _figures(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k.startswith(("train_", "valid_"))}


def _figures_full(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k.startswith("full_valid_")}


def _by_step(run: ChildRun) -> dict[int, dict[str, Any]]:
    return {line["step"]: _figures(line) for line in run.of("metrics")}


def _result_rows(output_dir: Path) -> list[dict[str, str]]:
    with (output_dir / "result.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _assert_same(resumed: dict[int, dict[str, Any]], reference: dict[int, dict[str, Any]]) -> None:
    assert sorted(resumed) == sorted(reference)
    for step, figures in reference.items():
        assert set(resumed[step]) == set(figures)
        for name, value in figures.items():
            if value is None:
                assert resumed[step][name] is None, (step, name)
            else:
                assert resumed[step][name] == pytest.approx(value, abs=TOLERANCE), (step, name)


def _pause_and_resume(
    spec: Path, folder: Path, request: Callable[[Child], None]
) -> tuple[ChildRun, ChildRun]:
    """Run ``spec``, ask for a pause once step 3 is logged, then run it again with ``resume``
    (what the supervisor does)."""
    first = Child(spec, folder / "first.log")
    first.read_until(lambda line: line["type"] == "metrics" and line["step"] >= 3)
    request(first)
    paused = first.finish()
    output_dir = folder / spec.stem
    assert not (output_dir / "model").exists() and not (output_dir / "result.csv").exists()
    for stop in paused.of("paused"):  # checked before the resumed run rotates old checkpoints out
        assert stop["path"] == str(output_dir / "checkpoints" / f"checkpoint-{stop['step']}")
        assert (Path(stop["path"]) / COMPLETE_MARKER).is_file()
    fields = json.loads(spec.read_text(encoding="utf-8"))
    resumed = run_child(write_spec(spec, **{**fields, "resume": True}), folder / "second.log")
    return paused, resumed


def _check(paused: ChildRun, resumed: ChildRun, reference: TrainedRun, output_dir: Path) -> None:
    assert paused.returncode == 0, paused.log
    assert [line["type"] for line in paused.lines if line["type"] in ("paused", "finished")] == ["paused"]
    stop = paused.of("paused")[0]
    step = stop["step"]
    total = reference.run.of("started")[0]["total_steps"]
    assert 3 <= step < total
    assert max(line["step"] for line in paused.of("metrics")) == step  # stopped at that boundary
    assert stop["metrics"]["step"] == step
    assert paused.of("checkpoint")[-1]["step"] == step

    assert resumed.returncode == 0, resumed.log
    assert resumed.of("started")[0]["resumed_from_step"] == step
    assert [m["step"] for m in resumed.of("metrics")] == list(range(step + 1, total + 1))
    _assert_same({**_by_step(paused), **_by_step(resumed)}, _by_step(reference.run))

    final, expected = resumed.of("finished")[0], reference.run.of("finished")[0]
    _assert_same({0: _figures_full(final)}, {0: _figures_full(expected)})
    rows, expected_rows = _result_rows(output_dir), _result_rows(reference.output_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in expected_rows]
    for row, expected_row in zip(rows, expected_rows, strict=True):
        for name, value in expected_row.items():
            if value == "":
                assert row[name] == "", (row["step"], name)
            else:
                assert float(row[name]) == pytest.approx(float(value), abs=TOLERANCE), (row["step"], name)


def test_sft_paused_by_sigusr1_and_resumed_matches_an_uninterrupted_run(
    tiny_model: Path, data_dir: Path, sft_run: TrainedRun, tmp_path: Path
) -> None:
    spec = sft_spec(tmp_path, "sft", tiny_model, data_dir)
    paused, resumed = _pause_and_resume(spec, tmp_path, lambda child: child.proc.send_signal(signal.SIGUSR1))
    _check(paused, resumed, sft_run, tmp_path / "sft")


def test_dpo_paused_by_the_control_file_and_resumed_matches_an_uninterrupted_run(
    tiny_model: Path, data_dir: Path, sft_run: TrainedRun, dpo_run: TrainedRun, tmp_path: Path
) -> None:
    spec = dpo_from_sft_spec(tmp_path, "dpo", tiny_model, data_dir, sft_run.model_dir)
    control_file = tmp_path / "dpo" / "PAUSE"
    paused, resumed = _pause_and_resume(spec, tmp_path, lambda child: control_file.touch())
    assert not control_file.exists()  # consumed by the pause: the resumed run does not stop again
    _check(paused, resumed, dpo_run, tmp_path / "dpo")
    # Checkpoints hold trl's frozen copy of the SFT adapter (the reference, which the rewards after
    # the resume depend on) beside the trained one; the final model holds the trained one only.
    newest = max((tmp_path / "dpo" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    assert (newest / "ref" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "dpo" / "model" / "ref").exists()


def test_a_pause_requested_before_training_stops_after_the_first_step(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = sft_spec(tmp_path, "early", tiny_model, data_dir)
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "PAUSE").touch()
    run = run_child(spec, tmp_path / "child.log")
    assert run.returncode == 0, run.log
    assert [line["type"] for line in run.lines] == ["started", "metrics", "checkpoint", "paused"]
    assert run.of("paused")[0]["step"] == 1
    assert not (tmp_path / "early" / "model").exists() and not (tmp_path / "early" / "PAUSE").exists()
