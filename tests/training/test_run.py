"""The training child process on the tiny model: protocol lines, loss, checkpoints, result file,
resume after kill -9, SIGTERM, errors."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING, Child, run_child, write_spec

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.core.jobs.metrics import METRIC_COLUMNS
from service.training.checkpoints import COMPLETE_MARKER

METRIC_KEYS = {
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "tokens_per_s",
    "eta_s",
    "epoch",
}


def spec(tmp_path: Path, base: Path | str, train: Path, **overrides: Any) -> Path:
    hyper = {"n_epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "checkpoint_every": 10, "seed": 1}
    hyper.update(overrides.pop("hyperparameters", {}))
    fields: dict[str, Any] = {
        "job_id": "ftjob-test",
        "base_model": str(base),
        "method": "full",
        "train_file": str(train),
        "validation_file": None,
        "output_dir": str(tmp_path / "out"),
        "resume": False,
        "hyperparameters": hyper,
        "device": "cpu",
        "threads": 1,
    }
    fields.update(overrides)
    return write_spec(tmp_path / "spec.json", **fields)


@pytest.mark.slow
def test_full_run_lowers_loss_checkpoints_and_writes_results(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    run = run_child(
        spec(
            tmp_path,
            tiny_model,
            data_dir / "qa_train.jsonl",
            validation_file=str(data_dir / "qa_valid.jsonl"),
        ),
        tmp_path / "child.log",
    )
    assert run.returncode == 0, run.log
    assert run.lines[0]["type"] == "started"
    started, finished = run.of("started")[0], run.of("finished")[0]
    assert started["total_steps"] == 40 and started["resumed_from_step"] is None
    assert started["device"] == "cpu" and started["train_examples"] == 160 and started["trainable_params"] > 0

    metrics = run.of("metrics")
    assert [m["step"] for m in metrics] == list(range(1, 41))
    assert all(set(m) - {"type"} == METRIC_KEYS for m in metrics)
    losses = [m["train_loss"] for m in metrics]
    assert statistics.mean(losses[-5:]) < statistics.mean(losses[:5]) - 0.5, losses
    evaluated = [m for m in metrics if m["valid_loss"] is not None]
    assert [m["step"] for m in evaluated] == [10, 20, 30, 40]
    assert evaluated[-1]["valid_loss"] < evaluated[0]["valid_loss"]
    assert all(m["tokens_per_s"] > 0 for m in metrics)
    assert metrics[-1]["eta_s"] == 0

    saved = run.of("checkpoint")
    assert [c["step"] for c in saved] == [10, 20, 30, 40]
    assert saved[0]["metrics"]["valid_loss"] == evaluated[0]["valid_loss"]
    kept = sorted((tmp_path / "out" / "checkpoints").glob("checkpoint-*"))
    assert [p.name for p in kept] == ["checkpoint-20", "checkpoint-30", "checkpoint-40"]  # the newest 3
    assert all((p / COMPLETE_MARKER).is_file() for p in kept)

    assert finished["steps"] == 40 and finished["model_dir"] == str(tmp_path / "out" / "model")
    assert finished["trained_tokens"] > 0 and finished["train_runtime_s"] > 0
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    with (tmp_path / "out" / "result.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert float(rows[-1]["full_valid_loss"]) == pytest.approx(finished["full_valid_loss"])
    assert rows[9]["valid_loss"] and not rows[8]["valid_loss"]


@pytest.mark.slow
def test_lora_on_chat_data_saves_an_adapter(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    run = run_child(
        spec(
            tmp_path,
            tiny_model,
            data_dir / "chat_train.jsonl",
            method="lora",
            hyperparameters={"learning_rate": 2e-2, "n_epochs": 1, "lora_rank": 8},
        ),
        tmp_path / "child.log",
    )
    assert run.returncode == 0, run.log
    losses = [m["train_loss"] for m in run.of("metrics")]
    assert statistics.mean(losses[-3:]) < statistics.mean(losses[:3]), losses
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "adapter_config.json").is_file() and not (model_dir / "model.safetensors").exists()

    from service.training.inference import generate

    text, finish_reason, prompt_tokens, completion_tokens = generate(
        str(model_dir), messages=[{"role": "user", "content": "消费现在还能买吗"}], max_tokens=12
    )
    assert isinstance(text, str) and text
    assert finish_reason in ("stop", "length") and prompt_tokens > 5 and 0 < completion_tokens <= 12


@pytest.mark.slow
def test_resume_after_kill9_continues_from_last_checkpoint(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    path = spec(
        tmp_path,
        tiny_model,
        data_dir / "qa_train.jsonl",
        resume=True,
        hyperparameters={"n_epochs": 3, "batch_size": 4, "checkpoint_every": 8},
    )
    first = Child(path, tmp_path / "first.log")
    checkpoint = first.read_until(lambda line: line["type"] == "checkpoint" and line["step"] >= 16)
    first.read_until(lambda line: line["type"] == "metrics" and line["step"] >= checkpoint["step"] + 2)
    first.proc.send_signal(signal.SIGKILL)
    first.finish()
    assert not first.lines or all(line["type"] != "finished" for line in first.lines)
    steps_before = [m["step"] for m in first.lines if m["type"] == "metrics"]
    newest = max(c["step"] for c in first.lines if c["type"] == "checkpoint")
    # What a kill in the middle of a save leaves: a newer checkpoint directory without its marker.
    torn = tmp_path / "out" / "checkpoints" / f"checkpoint-{newest + 1}"
    torn.mkdir(exist_ok=True)
    (torn / "trainer_state.json").write_text("{", encoding="utf-8")

    second = run_child(path, tmp_path / "second.log")
    assert second.returncode == 0, second.log
    started = second.of("started")[0]
    assert started["resumed_from_step"] == newest
    steps_after = [m["step"] for m in second.of("metrics")]
    assert steps_after == list(range(newest + 1, 121))
    assert max(steps_before) > newest  # work after the checkpoint was redone, not skipped
    assert second.of("finished")[0]["steps"] == 120

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "model", "result.csv"]
    with (out / "result.csv").open(encoding="utf-8") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 121))


@pytest.mark.slow
def test_sigterm_stops_within_seconds(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    child = Child(
        spec(tmp_path, tiny_model, data_dir / "qa_train.jsonl", hyperparameters={"n_epochs": 50}),
        tmp_path / "child.log",
    )
    child.read_until(lambda line: line["type"] == "metrics" and line["step"] >= 3)
    child.proc.send_signal(signal.SIGTERM)
    returncode, _ = child.wait_exit(timeout=10)
    assert returncode is not None, "the child did not stop within 10 s of SIGTERM"
    assert returncode != 0
    assert not (tmp_path / "out" / "model").exists()


def test_missing_base_model_is_model_not_found(data_dir: Path, tmp_path: Path) -> None:
    run = run_child(
        spec(tmp_path, tmp_path / "no-such-model", data_dir / "qa_train.jsonl"), tmp_path / "c.log"
    )
    assert run.returncode == 1
    assert [line["type"] for line in run.lines] == ["error"]
    assert run.error is not None and run.error["code"] == "model_not_found"
    assert "no-such-model" in run.error["message"]


@pytest.mark.slow
def test_unloadable_base_model_is_model_load_failed(data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "many"}', encoding="utf-8")
    run = run_child(spec(tmp_path, broken, data_dir / "qa_train.jsonl"), tmp_path / "c.log")
    assert run.returncode == 1 and run.error is not None
    assert run.error["code"] == "model_load_failed", run.error


@pytest.mark.slow
def test_over_long_example_fails_naming_the_line(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "long.jsonl"
    lines = (data_dir / "qa_train.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    lines.insert(3, '{"prompt": "' + "很长的问题" * 400 + '", "completion": "好"}')
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = run_child(spec(tmp_path, tiny_model, train), tmp_path / "c.log")
    assert run.returncode == 1 and run.error is not None
    assert run.error["code"] == "example_too_long"
    assert "line 4 " in run.error["message"] and "512" in run.error["message"]  # the tiny model's context


def _refuses_huge_allocations() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() in ("0", "2")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(
    not _refuses_huge_allocations(), reason="needs Linux overcommit mode 0 or 2 (refusal, no OOM kill)"
)
def test_model_larger_than_memory_is_out_of_memory(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    import psutil
    import torch
    from safetensors.torch import save_file

    # One MLP matrix needs 4x (RAM + swap): the kernel refuses the allocation at once (nothing
    # is touched), which is exactly what a too-large model does to the trainer.
    config = json.loads((tiny_model / "config.json").read_text(encoding="utf-8"))
    budget = psutil.virtual_memory().total + psutil.swap_memory().total
    config["intermediate_size"] = 4 * budget // (4 * config["hidden_size"])
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(json.dumps(config), encoding="utf-8")
    embed = torch.zeros(config["vocab_size"], config["hidden_size"])
    save_file({"model.embed_tokens.weight": embed}, str(huge / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model / name, huge / name)
    run = run_child(spec(tmp_path, huge, data_dir / "qa_train.jsonl"), tmp_path / "c.log")
    assert run.returncode == 1 and run.error is not None
    assert run.error["code"] == "out_of_memory", run.error
    assert "memory" in run.error["message"]
