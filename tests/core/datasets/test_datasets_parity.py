"""Parity with the classic `openai tools fine_tunes.prepare_data` on English completion data."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from service.core.datasets import PrepareOptions, prepare_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY = Path(__file__).resolve().parents[3] / ".venv-legacy" / "bin" / "openai"


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _tuneline(src: Path, out: Path) -> list[dict]:
    report = prepare_file(src, PrepareOptions(model="babbage-002"), out_dir=out)
    assert report.usable, report.status_details
    return _rows(report.outputs["train"])


def test_parity_with_recorded_legacy_output(tmp_path: Path) -> None:
    """The legacy tool's output for the fixture was recorded with openai[datalib]==0.28.1 -q."""
    expected = _rows(FIXTURES / "english_qa.legacy_prepared.jsonl")
    assert _tuneline(FIXTURES / "english_qa.jsonl", tmp_path) == expected


@pytest.fixture
def legacy_tool() -> Path:
    if not LEGACY.exists():
        pytest.skip(
            f"legacy tool not installed at {LEGACY} (python3 -m venv .venv-legacy && "
            ".venv-legacy/bin/pip install 'openai[datalib]==0.28.1')"
        )
    return LEGACY


def _run_legacy(tool: Path, src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool), "tools", "fine_tunes.prepare_data", "-f", str(src), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_parity_live(legacy_tool: Path, tmp_path: Path) -> None:
    src = tmp_path / "english_qa.jsonl"
    shutil.copy(FIXTURES / "english_qa.jsonl", src)
    proc = _run_legacy(legacy_tool, src)
    assert proc.returncode == 0, proc.stderr
    expected = _rows(tmp_path / "english_qa_prepared.jsonl")
    assert _tuneline(src, tmp_path / "out") == expected


def test_tuneline_survives_where_legacy_crashes(legacy_tool: Path, tmp_path: Path) -> None:
    """Duplicates before a long row: the legacy tool drops long rows by stale position and fails."""
    rows = _rows(FIXTURES / "english_qa.jsonl")[:12]
    rows.append(rows[0])  # dropped as a duplicate: its label is where the long row now sits
    rows.append({"prompt": "Write a long essay", "completion": "word " * 2500})
    src = tmp_path / "crash.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    proc = _run_legacy(legacy_tool, src)
    assert proc.returncode != 0 or not (tmp_path / "crash_prepared.jsonl").exists()
    report = prepare_file(src, PrepareOptions(model="babbage-002"), out_dir=tmp_path / "out")
    assert report.usable
    assert report.counts["duplicates"] == 1
    assert report.counts["kept"] == 13
