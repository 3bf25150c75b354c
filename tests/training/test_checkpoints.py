"""Publishing a checkpoint (the Ray executor's rank 0): the job's copy holds the model, not the
resume-only state, replaces a redone step, and only the newest ``KEEP_CHECKPOINTS`` stay."""

from __future__ import annotations

from pathlib import Path

from service.training import checkpoints
from service.training.spec import KEEP_CHECKPOINTS


def saved(root: Path, step: int) -> Path:
    """A complete checkpoint as the trainer leaves it (weights, tokenizer, resume state, marker)."""
    folder = root / f"checkpoint-{step}"
    (folder / "ref").mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "tokenizer.json"):
        (folder / name).write_text(f"{name} {step}")
    (folder / "ref" / "adapter_model.safetensors").write_text("ref")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth", "scaler.pt"):
        (folder / name).write_text("resume")
    checkpoints.mark_complete(folder, {"step": step})
    return folder


def test_publish_copies_the_model_and_keeps_the_newest(tmp_path: Path) -> None:
    local, job = tmp_path / "worker", tmp_path / "job" / "checkpoints"
    published = [checkpoints.publish(saved(local, step), job, KEEP_CHECKPOINTS) for step in (5, 10, 15, 20)]

    assert published[-1] == job / "checkpoint-20"
    assert sorted(p.name for p in published[-1].iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "ref",
        "tokenizer.json",
        "trainer_state.json",
        checkpoints.COMPLETE_MARKER,
    ]
    assert (published[-1] / "ref" / "adapter_model.safetensors").read_text() == "ref"
    # The process executor's rule (save_total_limit): the newest 3 complete ones; no temporaries.
    assert [p.name for p in sorted(job.iterdir())] == ["checkpoint-10", "checkpoint-15", "checkpoint-20"]
    assert checkpoints.complete(job) == [job / "checkpoint-10", job / "checkpoint-15", job / "checkpoint-20"]

    # A run redone from an earlier checkpoint (a lost Ray worker) publishes the step again: replaced.
    redo = saved(tmp_path / "again", 20)
    (redo / "adapter_model.safetensors").write_text("redone")
    checkpoints.publish(redo, job, KEEP_CHECKPOINTS)
    assert (job / "checkpoint-20" / "adapter_model.safetensors").read_text() == "redone"
    assert [p.name for p in sorted(job.iterdir())] == ["checkpoint-10", "checkpoint-15", "checkpoint-20"]
