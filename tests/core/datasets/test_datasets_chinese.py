"""The motivating Chinese dataset: duplicates by line, UTF-8 output, no English-only fixes."""

from __future__ import annotations

import json
from pathlib import Path

from service.core.datasets import PrepareOptions, prepare_file


def _expected_duplicates(path: Path) -> dict[int, int]:
    first: dict[tuple[str, str], int] = {}
    dups: dict[int, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        key = (row["prompt"], row["completion"])
        if key in first:
            dups[n] = first[key]
        else:
            first[key] = n
    return dups


def test_duplicates_found_with_line_numbers(sample_data: Path) -> None:
    path = sample_data / "funds_qa.jsonl"
    expected = _expected_duplicates(path)
    report = prepare_file(path, PrepareOptions(max_findings_per_code=100_000))
    found = {
        f["line"]: int(f["message"].split("line ")[1].split()[0])
        for f in report.findings
        if f["code"] == "duplicate"
    }
    assert found == expected
    assert report.counts["duplicates"] == len(expected) == report.finding_totals["duplicate"]
    assert report.counts["kept"] == 2500 - len(expected)


def test_findings_capped_per_code_but_totals_exact(sample_data: Path) -> None:
    report = prepare_file(sample_data / "funds_qa.jsonl", PrepareOptions(max_findings_per_code=5))
    assert sum(1 for f in report.findings if f["code"] == "duplicate") == 5
    assert report.finding_totals["duplicate"] == report.counts["duplicates"] > 5


def test_completion_model_no_ascii_space_and_utf8_output(sample_data: Path, tmp_path: Path) -> None:
    path = sample_data / "funds_qa.jsonl"
    report = prepare_file(path, PrepareOptions(model="babbage-002"), out_dir=tmp_path)
    assert report.usable
    assert "added_leading_space" not in {f["code"] for f in report.fixes}
    assert "leading_space_skipped" in report.finding_totals
    text = report.outputs["train"].read_text(encoding="utf-8")
    assert "\\u" not in text
    rows = [json.loads(x) for x in text.splitlines()]
    assert len(rows) == report.counts["kept"]
    stop = report.to_dict()["prepared"]["stop"]
    sep = report.to_dict()["prepared"]["separator"]
    for row in rows:
        assert not row["completion"].startswith(" ")
        assert row["completion"].endswith(stop)
        assert row["prompt"].endswith(sep)
    assert stop not in (".", "。")


def test_chat_conversion(sample_data: Path, tmp_path: Path) -> None:
    path = sample_data / "funds_qa.jsonl"
    report = prepare_file(path, PrepareOptions(system_prompt="你是理财助手。"), out_dir=tmp_path)
    text = report.outputs["train"].read_text(encoding="utf-8")
    assert "\\u" not in text and "理财" in text
    rows = [json.loads(x) for x in text.splitlines()]
    source = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {
        "messages": [
            {"role": "system", "content": "你是理财助手。"},
            {"role": "user", "content": source[0]["prompt"]},
            {"role": "assistant", "content": source[0]["completion"]},
        ]
    }
    assert len(rows) == report.counts["kept"]
    assert report.to_dict()["prepared"]["format"] == "chat"


def test_poor_stop_sequence_for_multi_sentence_answers(tmp_path: Path) -> None:
    path = tmp_path / "zh.jsonl"
    rows = [{"prompt": f"问题{i}", "completion": f"先看估值。再看仓位{i}。"} for i in range(20)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = prepare_file(path, PrepareOptions(model="davinci-002"), out_dir=tmp_path / "out")
    assert "poor_stop_sequence" in report.finding_totals
    stop = report.to_dict()["prepared"]["stop"]
    assert stop and stop not in (".", "。")
    out = [json.loads(x) for x in report.outputs["train"].read_text(encoding="utf-8").splitlines()]
    assert out[0]["completion"] == f"先看估值。再看仓位0。{stop}"


def test_chat_file_is_kept_as_is(sample_data: Path, tmp_path: Path) -> None:
    report = prepare_file(sample_data / "funds_chat.jsonl", PrepareOptions(), out_dir=tmp_path)
    assert report.format == "chat" and report.usable
    first_in = json.loads((sample_data / "funds_chat.jsonl").read_text(encoding="utf-8").splitlines()[0])
    first_out = json.loads(report.outputs["train"].read_text(encoding="utf-8").splitlines()[0])
    assert first_out == first_in
