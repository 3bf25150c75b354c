"""Reinforcement rows in preparation: told apart from chat, kept whole (the grader's fields), split
by prompt, and, for a job, every row checked against its grader, each problem named by line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.core.datasets import PrepareOptions, prepare_file

GRADER = {
    "type": "multi",
    "name": "answer",
    "graders": {
        "exact": {
            "type": "string_check",
            "name": "exact",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "eq",
        },
        "close": {
            "type": "text_similarity",
            "name": "close",
            "input": "{{sample.output_text}}",
            "reference": "{{item.refs[0].text}}",
            "evaluation_metric": "fuzzy_match",
        },
    },
    "calculate_output": "0.5 * exact + 0.5 * close",
}


def row(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "只答数字"},
            {"role": "user", "content": f"{i}加1等于几？"},
        ],
        "answer": str(i + 1),
        "refs": [{"text": str(i + 1)}],
        **fields,
    }


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def errors(report: dict[str, Any]) -> set[tuple[str, int | None, str | None]]:
    return {(f["code"], f["line"], f["field"]) for f in report["findings"] if f["severity"] == "error"}


def test_rows_ending_on_a_user_turn_are_reinforcement_data_kept_whole(tmp_path: Path) -> None:
    rows = [row(i) for i in range(12)]
    report = prepare_file(write(tmp_path / "rl.jsonl", rows), PrepareOptions(), tmp_path / "out")
    d = report.to_dict()
    assert (d["format"], d["status"]) == ("reinforcement", "processed"), d["status_details"]
    assert not [f for f in d["findings"] if f["code"] == "unknown_key"]  # the grader's fields
    written = [json.loads(line) for line in report.outputs["train"].read_text(encoding="utf-8").splitlines()]
    assert written == rows
    assert d["prepared"]["format"] == "reinforcement"
    assert d["tokens"]["total"] > 0  # the prompts' tokens
    assert all(not c["trainable"] for c in d["estimate"]["candidates"])  # OpenAI's table: no RFT model


def test_a_jobs_grader_names_the_rows_it_cannot_score(tmp_path: Path) -> None:
    rows: list[Any] = [row(i) for i in range(12)]
    rows.append({k: v for k, v in row(12).items() if k != "answer"})  # line 13: no `answer`
    rows.append(row(13, refs=[]))  # line 14: no refs[0]
    rows.append({**row(14), "messages": [*row(14)["messages"], {"role": "assistant", "content": "15"}]})
    path = write(tmp_path / "rl.jsonl", rows)
    options = PrepareOptions(method="reinforcement", grader=GRADER)
    d = prepare_file(path, options).to_dict()
    assert errors(d) == {
        ("grader_missing_field", 13, "answer"),
        ("grader_missing_field", 14, "refs[0].text"),
        ("reinforcement_last_message", 15, "messages[2].role"),
    }
    messages = {f["line"]: f["message"] for f in d["findings"]}
    assert messages[13] == (
        "method.reinforcement.grader.graders.exact.reference uses '{{item.answer}}', "
        "which this row does not have"
    )
    assert d["status"] == "error" and d["counts"]["kept"] == 12
    # Uploaded without a job, the same file only misses the assistant-ended row: fields are the
    # grader's business, and there is no grader yet.
    assert errors(prepare_file(path, PrepareOptions()).to_dict()) == {
        ("reinforcement_last_message", 15, "messages[2].role")
    }


def test_a_supervised_job_reads_a_user_ended_row_as_chat_missing_its_reply(tmp_path: Path) -> None:
    chat = [
        {"messages": [{"role": "user", "content": f"问{i}"}, {"role": "assistant", "content": f"答{i}"}]}
        for i in range(12)
    ]
    path = write(tmp_path / "chat.jsonl", [row(0), *chat])
    d = prepare_file(path, PrepareOptions(method="supervised")).to_dict()
    assert errors(d) == {("missing_assistant_message", 1, "messages")}


def test_the_estimate_counts_samples_and_steps_and_the_split_keeps_prompts_together(tmp_path: Path) -> None:
    rows = [row(i % 20) for i in range(40)]  # each prompt twice, the copies told apart by a field
    rows = [{**r, "copy": n} for n, r in enumerate(rows)]
    options = PrepareOptions(
        method="reinforcement",
        grader=GRADER,
        split_test=0.25,
        seed=3,
        n_epochs=2,
        hyperparameters={"batch_size": 5, "compute_multiplier": 1.5, "max_completion_length": 32},
    )
    report = prepare_file(write(tmp_path / "rl.jsonl", rows), options, tmp_path / "out")
    d = report.to_dict()
    train, test = d["counts"]["train"], d["counts"]["test"]
    assert train + test == 40 and test > 0
    estimate = d["estimate"]["reinforcement"]
    assert estimate["num_generations"] == 6  # 1.5 x 4
    assert estimate["steps"] == -(-train // 5) * 2 and estimate["samples"] == train * 6 * 2
    assert estimate["max_generated_tokens"] == estimate["samples"] * 32

    def prompts(name: str) -> set[str]:
        lines = report.outputs[name].read_text(encoding="utf-8").splitlines()
        return {json.loads(line)["messages"][-1]["content"] for line in lines}

    assert prompts("train").isdisjoint(prompts("test"))
