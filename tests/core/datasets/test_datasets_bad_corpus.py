"""Every file of the shared bad-input corpus gets its specific, line-numbered findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.core.datasets import PrepareOptions, prepare_file

# file -> exact set of (code, line, field) error findings
EXPECTED_ERRORS: dict[str, set[tuple[str, int | None, str | None]]] = {
    "array_file.json": set(),
    "array_line.jsonl": {("not_object", 4, None), ("not_object", 5, None), ("not_object", 6, None)},
    "bad_fields.jsonl": {
        ("missing_key", 5, "completion"),
        ("wrong_type", 6, "completion"),
        ("wrong_type", 7, "prompt"),
    },
    "binary.jsonl": {("binary_content", 1, None)},
    "bom_crlf_blank.jsonl": set(),
    "control_chars.jsonl": {("not_json", 4, None), ("not_json", 10, None)},
    "deep_array.json": {("too_deep", 5, "completion"), ("too_few_examples", None, None)},
    "deep_nesting.jsonl": {("too_deep", 5, "completion"), ("too_deep", 9, "meta")},
    "huge_numbers.jsonl": {
        ("invalid_number", 4, "id"),
        ("invalid_number", 7, "score"),
        ("invalid_number", 9, "score"),
    },
    "lone_surrogates.jsonl": {
        ("invalid_unicode", 3, "prompt"),
        ("invalid_unicode", 6, "messages[1].content"),
    },
    "chat_problems.jsonl": {
        ("missing_assistant_message", 6, "messages"),
        ("unrecognized_role", 7, "messages[1].role"),
        ("message_missing_key", 8, "messages[1].content"),
        ("wrong_type", 9, "messages"),
        ("message_unrecognized_key", 10, "messages[0].foo"),
        ("missing_messages_list", 11, "messages"),
    },
    "empty.jsonl": {("empty_file", None, None)},
    "empty_fields.jsonl": set(),
    "export.csv": set(),
    "gbk_encoded.jsonl": {("unsupported_encoding", 1, None)},
    "huge_line.jsonl": {("too_many_tokens", 21, None)},
    "not_json_line.jsonl": {("not_json", 6, None)},
    "too_few.jsonl": {("too_few_examples", None, None)},
}

# file -> (code, line, field) non-error findings that must be present
EXPECTED_WARNINGS: dict[str, set[tuple[str, int | None, str | None]]] = {
    "bad_fields.jsonl": {("unknown_key", 8, "extra")},
    "bom_crlf_blank.jsonl": {("blank_line", 11, None), ("blank_line", 12, None)},
    "empty_fields.jsonl": {
        ("empty_field", 21, "prompt"),
        ("empty_field", 22, "completion"),
        ("empty_field", 23, "prompt"),
        ("empty_field", 23, "completion"),
    },
}

EXPECTED_WARNINGS.update(
    {
        "deep_nesting.jsonl": {("unknown_key", 11, "tags")},  # many brackets, shallow: a plain row
        "huge_numbers.jsonl": {("unknown_key", 11, "id")},  # 30 digits: valid JSON, read exactly
    }
)

EXPECTED_FIXES = {
    "array_file.json": "converted_from_json_array",
    "export.csv": "converted_from_csv",
    "bom_crlf_blank.jsonl": "skipped_blank_lines",
    "empty_fields.jsonl": "dropped_empty",
}

USABLE = {"array_file.json", "bom_crlf_blank.jsonl", "empty_fields.jsonl", "export.csv"}


def _errors(report_dict: dict) -> set[tuple[str, int | None, str | None]]:
    return {(f["code"], f["line"], f["field"]) for f in report_dict["findings"] if f["severity"] == "error"}


def test_corpus_is_covered(bad_dir: Path) -> None:
    assert {p.name for p in bad_dir.iterdir()} == set(EXPECTED_ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_bad_file_findings(bad_dir: Path, name: str) -> None:
    report = prepare_file(bad_dir / name, PrepareOptions())
    d = report.to_dict()
    json.dumps(d, ensure_ascii=False)  # JSON-able
    assert _errors(d) == EXPECTED_ERRORS[name]
    present = {(f["code"], f["line"], f["field"]) for f in d["findings"]}
    assert EXPECTED_WARNINGS.get(name, set()) <= present
    if name in EXPECTED_FIXES:
        assert EXPECTED_FIXES[name] in {fx["code"] for fx in d["fixes"]}
    assert report.usable is (name in USABLE)
    assert d["status"] == ("processed" if name in USABLE else "error")
    if not report.usable:
        assert report.status_details
        first = sorted(EXPECTED_ERRORS[name], key=lambda e: e[1] or 0)[0]
        assert first[0] in report.status_details


def test_gbk_is_named_and_converted_when_asked(bad_dir: Path, tmp_path: Path) -> None:
    rejected = prepare_file(bad_dir / "gbk_encoded.jsonl", PrepareOptions())
    assert rejected.encoding == "gb18030"
    assert "GB18030" in rejected.findings[0]["message"]
    converted = prepare_file(
        bad_dir / "gbk_encoded.jsonl", PrepareOptions(convert_encoding=True), out_dir=tmp_path
    )
    assert converted.usable
    assert "converted_encoding" in {f["code"] for f in converted.fixes}
    first = json.loads((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][0]["content"] == "问题0:指数基金怎么定投?"


def test_csv_multiline_records_keep_first_line(bad_dir: Path, tmp_path: Path) -> None:
    report = prepare_file(bad_dir / "export.csv", PrepareOptions(model="babbage-002"), out_dir=tmp_path)
    assert report.counts["examples"] == 20
    assert report.counts["lines"] == 41
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["prompt"].startswith("问题0,带逗号")
    assert rows[0]["completion"].startswith("回答0\n第二行")


def test_csv_error_line_is_record_start(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    body = 'prompt,completion\n"a\nb","c"\n"d","e","extra"\n'
    path.write_text(body, encoding="utf-8")
    d = prepare_file(path, PrepareOptions()).to_dict()
    assert ("csv_columns", 4, None) in _errors(d)


def test_json_array_findings_carry_index(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n {"prompt": "p", "completion": "c"},\n {"prompt": 1, "completion": "c"}\n]\n')
    d = prepare_file(path, PrepareOptions()).to_dict()
    bad = [f for f in d["findings"] if f["code"] == "wrong_type"]
    assert bad == [
        {
            "code": "wrong_type",
            "severity": "error",
            "line": 3,
            "field": "prompt",
            "message": "`prompt` must be a string, got number",
            "index": 1,
        }
    ]


def test_skip_invalid_lines_makes_file_usable(bad_dir: Path, tmp_path: Path) -> None:
    report = prepare_file(
        bad_dir / "not_json_line.jsonl", PrepareOptions(skip_invalid_lines=True), out_dir=tmp_path
    )
    assert report.usable
    assert report.counts["kept"] == 20
    assert len((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 20


def test_utf16_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "u16.jsonl"
    rows = "".join(
        json.dumps({"prompt": f"问{i}", "completion": f"答{i}"}, ensure_ascii=False) + "\n" for i in range(12)
    )
    path.write_bytes(rows.encode("utf-16"))
    rejected = prepare_file(path, PrepareOptions())
    assert [f["code"] for f in rejected.findings] == ["unsupported_encoding"]
    assert "UTF-16" in rejected.findings[0]["message"]
    converted = prepare_file(path, PrepareOptions(convert_encoding=True))
    assert converted.usable and converted.counts["kept"] == 12


def test_mixed_format_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) for i in range(11)]
    lines.insert(
        3, json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})
    )
    path.write_text("\n".join(lines) + "\n")
    d = prepare_file(path, PrepareOptions()).to_dict()
    assert d["format"] == "mixed"
    assert ("mixed_format", 4, None) in _errors(d)


def test_preference_checks(tmp_path: Path) -> None:
    good = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    rows = []
    for i in range(12):
        row = json.loads(json.dumps(good))
        row["input"]["messages"][0]["content"] = f"q{i}"
        rows.append(row)
    rows.append({"input": good["input"], "preferred_output": [{"role": "assistant", "content": "x"}]})
    rows.append({**good, "preferred_output": good["non_preferred_output"]})
    rows.append({**good, "preferred_output": {"role": "assistant", "content": "x"}})
    path = tmp_path / "dpo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = prepare_file(path, PrepareOptions()).to_dict()
    assert d["format"] == "preference"
    assert _errors(d) == {
        ("missing_key", 13, "non_preferred_output"),
        ("preference_identical", 14, "non_preferred_output"),
        ("preference_output", 15, "preferred_output"),
    }
    babbage = prepare_file(path, PrepareOptions(model="babbage-002", skip_invalid_lines=True))
    assert ("format_not_supported", None, None) in _errors(babbage.to_dict())
    assert not babbage.usable


def test_pathological_lines_keep_the_rest_of_the_file(bad_dir: Path) -> None:
    """A line no parser should take costs that line only: every other row is read and kept."""
    for name in ("deep_nesting.jsonl", "huge_numbers.jsonl", "lone_surrogates.jsonl", "control_chars.jsonl"):
        d = prepare_file(bad_dir / name, PrepareOptions(skip_invalid_lines=True)).to_dict()
        assert d["status"] == "processed", (name, d["status_details"])
        assert d["counts"]["kept"] == d["counts"]["examples"] - d["counts"]["invalid"] == 13, name
