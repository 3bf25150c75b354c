"""`tuneline prepare`: exit codes, JSON output and written files."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from service.cli.prepare import prepare


def test_usable_file_exits_0(sample_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        prepare, [str(sample_data / "funds_qa.jsonl"), "--out", str(tmp_path), "--split", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "Usable for training." in result.output
    assert (tmp_path / "train.jsonl").exists() and (tmp_path / "validation.jsonl").exists()


def test_errors_exit_1_with_line_numbers(bad_dir: Path) -> None:
    result = CliRunner().invoke(prepare, [str(bad_dir / "not_json_line.jsonl")])
    assert result.exit_code == 1
    assert "line 6" in result.output and "not_json" in result.output


def test_json_output_is_the_report(bad_dir: Path) -> None:
    result = CliRunner().invoke(prepare, [str(bad_dir / "bad_fields.jsonl"), "--json"])
    assert result.exit_code == 1
    d = json.loads(result.output)
    assert d["status"] == "error"
    assert "只有问题" not in result.output  # dataset text never leaks into findings
    assert "\\u" not in result.output


def test_usage_errors_exit_2(tmp_path: Path, bad_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(prepare, [str(tmp_path / "missing.jsonl")]).exit_code == 2
    assert runner.invoke(prepare, [str(bad_dir / "too_few.jsonl"), "--model", "nope"]).exit_code == 2
    assert runner.invoke(prepare, [str(bad_dir / "too_few.jsonl"), "--split", "1.5"]).exit_code == 2
    assert runner.invoke(prepare, [str(bad_dir / "too_few.jsonl"), "--no-fix", "bogus"]).exit_code == 2


def test_flags_switch_fixes(bad_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(prepare, [str(bad_dir / "empty_fields.jsonl"), "--no-fix", "empty", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["finding_totals"]["empty_field"] == 4
    ok = runner.invoke(prepare, [str(bad_dir / "not_json_line.jsonl"), "--skip-invalid-lines"])
    assert ok.exit_code == 0
    gbk = runner.invoke(prepare, [str(bad_dir / "gbk_encoded.jsonl"), "--convert-encoding"])
    assert gbk.exit_code == 0


def test_a_grader_names_the_rows_it_cannot_score(tmp_path: Path) -> None:
    from tests.core.datasets.test_datasets_reinforcement import GRADER, row, write

    rows = [row(i) for i in range(12)]
    rows.insert(3, {k: v for k, v in row(3).items() if k != "answer"})  # line 4: no `answer`
    path = write(tmp_path / "rl.jsonl", rows)
    (tmp_path / "grader.json").write_text(json.dumps(GRADER), encoding="utf-8")
    result = CliRunner().invoke(prepare, [str(path), "--grader", f"@{tmp_path / 'grader.json'}", "--json"])
    assert result.exit_code == 1, result.output
    found = [f for f in json.loads(result.output)["findings"] if f["code"] == "grader_missing_field"]
    assert [(f["line"], f["field"]) for f in found] == [(4, "answer")]
    # Without the grader the fields are nobody's business yet: the file is usable.
    assert CliRunner().invoke(prepare, [str(path)]).exit_code == 0
    # A grader that is not JSON, or names an unknown type, is a usage error naming it.
    bad = CliRunner().invoke(prepare, [str(path), "--grader", "{nope"])
    assert bad.exit_code == 2 and "--grader" in bad.output
    unknown = CliRunner().invoke(prepare, [str(path), "--grader", json.dumps({**GRADER, "type": "nope"})])
    assert unknown.exit_code == 2 and "method.reinforcement.grader" in unknown.output
