"""Train/validation/test splits: deterministic by seed, after dedupe, and by prompt."""

from __future__ import annotations

import json
from pathlib import Path

from service.core.datasets import PrepareOptions, prepare_file


def _write(path: Path, n_prompts: int = 200, per_prompt: int = 3) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_prompts):
            for j in range(per_prompt):
                f.write(
                    json.dumps({"prompt": f"问题 {i}", "completion": f"回答 {i}-{j}"}, ensure_ascii=False)
                    + "\n"
                )
            f.write(
                json.dumps({"prompt": f"问题 {i}", "completion": f"回答 {i}-0"}, ensure_ascii=False) + "\n"
            )


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _prompt(row: dict) -> str:
    return row["messages"][0]["content"]


def test_split_by_prompt_and_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    _write(src)
    opts = PrepareOptions(split_validation=0.1, split_test=0.1, seed=7)
    a = prepare_file(src, opts, out_dir=tmp_path / "a")
    b = prepare_file(src, opts, out_dir=tmp_path / "b")
    for name in ("train", "validation", "test"):
        assert a.outputs[name].read_bytes() == b.outputs[name].read_bytes()
    train = {_prompt(r) for r in _rows(a.outputs["train"])}
    valid = {_prompt(r) for r in _rows(a.outputs["validation"])}
    test = {_prompt(r) for r in _rows(a.outputs["test"])}
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(train) + len(valid) + len(test) == 200
    # made after dedupe: 200 duplicates dropped before splitting
    assert a.counts["duplicates"] == 200
    assert a.counts["train"] + a.counts["validation"] + a.counts["test"] == 600
    assert 20 <= a.counts["validation"] <= 120 and 20 <= a.counts["test"] <= 120
    other = prepare_file(src, PrepareOptions(split_validation=0.1, split_test=0.1, seed=8))
    assert other.counts["validation"] != a.counts["validation"] or other.counts["test"] != a.counts["test"]


def test_no_split_writes_train_only(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    _write(src, 20, 1)
    report = prepare_file(src, PrepareOptions(dedupe=False), out_dir=tmp_path / "o")
    assert set(report.outputs) == {"train"}
    assert report.counts["duplicates"] == 20 and report.counts["kept"] == 40
    assert "dropped_duplicates" not in {f["code"] for f in report.fixes}
