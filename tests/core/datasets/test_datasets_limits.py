"""Limits instead of crashes: lines pathological for a parser are findings with their line and field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

from service.cli.prepare import prepare
from service.core.datasets import PrepareOptions, prepare_file
from service.core.datasets.reader import MAX_DEPTH, MAX_LINE_BYTES, value_problem


def _good(n: int) -> list[str]:
    return [json.dumps({"prompt": f"question {i}?", "completion": f" answer {i}."}) for i in range(n)]


def _errors(path: Path, **options: object) -> list[tuple[str, int | None, str | None]]:
    d = prepare_file(path, PrepareOptions(**options)).to_dict()  # type: ignore[arg-type]
    return [(f["code"], f["line"], f["field"]) for f in d["findings"] if f["severity"] == "error"]


def test_a_100_mb_line_is_a_finding_and_the_next_lines_are_read(tmp_path: Path) -> None:
    src = tmp_path / "huge.jsonl"
    rows = _good(12)
    with src.open("w") as f:
        f.write("\n".join(rows[:5]) + "\n")
        f.write('{"prompt": "x", "completion": "')
        chunk = "lorem ipsum " * 87_382  # ~1 MiB
        for _ in range(100):
            f.write(chunk)
        f.write('"}\n')
        f.write("\n".join(rows[5:]) + "\n")
    assert src.stat().st_size > 100 * 1024 * 1024 > MAX_LINE_BYTES
    d = prepare_file(src, PrepareOptions(skip_invalid_lines=True)).to_dict()
    assert [(f["code"], f["line"]) for f in d["findings"] if f["severity"] == "error"] == [
        ("line_too_long", 6)
    ]
    assert d["counts"]["lines"] == 13 and d["counts"]["kept"] == 12
    assert d["status"] == "processed"


def test_nesting_just_under_and_over_the_limit(tmp_path: Path) -> None:
    src = tmp_path / "depth.jsonl"
    ok = '{"prompt": "a", "completion": "b", "x": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    over = '{"prompt": "a", "completion": "c", "x": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    # 900 levels: orjson reads it (its limit is 1024), the stdlib parser would be near its recursion limit
    near = '{"prompt": "a", "completion": "d", "y": ' + "[" * 900 + "]" * 900 + "}"
    src.write_text("\n".join([*_good(10), ok, over, near]) + "\n")
    assert _errors(src) == [("too_deep", 12, "x"), ("too_deep", 13, "y")]


def test_deep_nesting_in_chat_is_a_finding(tmp_path: Path) -> None:
    src = tmp_path / "chat.jsonl"
    deep = "[" * 200_000 + "]" * 200_000
    line = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ' + deep + "}]}"
    src.write_text(line + "\n")
    assert _errors(src)[0] == ("too_deep", 1, "messages")
    assert sys.getrecursionlimit() < 200_000  # the stdlib parser alone would have raised


def test_value_problem_names_the_field() -> None:
    assert value_problem({"messages": [{"content": "a\ud800"}]}) == (
        "invalid_unicode",
        "messages[0].content",
        "a lone surrogate (\\ud800-\\udfff escape without its pair) is not valid Unicode text",
    )
    assert value_problem({"a": [1.0, float("nan")]})[:2] == ("invalid_number", "a[1]")  # type: ignore[index]
    assert value_problem({"a": {"b": "😀", "c": [1, 2**80]}}) is None


def test_offline_prepare_reports_instead_of_a_traceback(bad_dir: Path) -> None:
    result = CliRunner().invoke(prepare, [str(bad_dir / "deep_nesting.jsonl")])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, RecursionError)
    assert "line 5" in result.output and "too_deep" in result.output and "completion" in result.output
