"""The engine's report and written splits, byte for byte, against goldens recorded before the fast engine.

The goldens in `golden/` were written by the two-pass engine that preceded the single-decode,
batch-tokenising one; any change to a report or a written row on this data is a regression.
Regenerate them only for an intended change of the report:
`python -m tests.core.datasets.test_datasets_golden`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from service.core.datasets import PrepareOptions, prepare_file

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden"
DATA = ROOT / "tests" / "data"
_LISTED = GOLDEN / "files.json"  # the corpus files that existed when the goldens were recorded
_BAD = (
    json.loads(_LISTED.read_text()) if _LISTED.exists() else sorted(p.name for p in (DATA / "bad").iterdir())
)
FILES = [*(f"bad/{name}" for name in _BAD), "funds_qa.jsonl", "funds_chat.jsonl"]

# name -> options; each case writes splits so the second pass is compared too
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "davinci": {"model": "davinci-002"},
    "split_chat": {
        "model": "gpt-3.5-turbo-0125",
        "split_validation": 0.1,
        "split_test": 0.1,
        "system_prompt": "You answer questions about funds.",
        "seed": 7,
    },
    "lenient_nofix": {
        "model": "davinci-002",
        "skip_invalid_lines": True,
        "dedupe": False,
        "drop_empty": False,
        "completion_fixes": False,
        "max_findings_per_code": 3,
        "n_epochs": 2,
    },
    "convert": {"convert_encoding": True, "skip_invalid_lines": True, "to_chat": False},
}


def render(src: Path, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The report as served (outputs by name) plus each written split's size and sha256."""
    report = prepare_file(src, PrepareOptions(**options), out_dir=out_dir)
    d = report.to_dict()
    d["outputs"] = {
        name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for name, p in sorted(report.outputs.items())
    }
    return d


def _golden_path(rel: str, case: str) -> Path:
    return GOLDEN / f"{rel.replace('/', '__')}.{case}.json"


def _dump(d: dict[str, Any]) -> str:
    return json.dumps(d, ensure_ascii=False, indent=1) + "\n"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("rel", FILES)
def test_report_matches_golden(rel: str, case: str, tmp_path: Path) -> None:
    expected = _golden_path(rel, case).read_text(encoding="utf-8")
    assert _dump(render(DATA / rel, CASES[case], tmp_path / "out")) == expected


@pytest.mark.parametrize("case", ["davinci", "split_chat", "lenient_nofix"])
@pytest.mark.parametrize("rel", ["funds_qa.jsonl", "funds_chat.jsonl", "bad/chat_problems.jsonl"])
def test_counting_in_worker_processes_gives_the_same_report(
    rel: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large files count their tokens in worker processes: the same report and rows as on threads."""
    from service.core.datasets import tokens

    monkeypatch.setattr(tokens, "PROCESS_MIN_BYTES", 0)
    expected = _golden_path(rel, case).read_text(encoding="utf-8")
    assert _dump(render(DATA / rel, CASES[case], tmp_path / "out")) == expected


def test_a_counting_process_that_dies_is_counted_again_on_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed (out of memory, say) loses no counts: its batches are counted again
    in the preparing process, and the report is the one the threads give."""
    import contextlib
    import os
    import signal

    from service.core.datasets import engine, tokens

    monkeypatch.setattr(tokens, "PROCESS_MIN_BYTES", 0)
    real = tokens.counting_pool

    @contextlib.contextmanager
    def killed_pool(size_bytes: int, encoding: str) -> Any:
        with real(size_bytes, encoding) as executor:
            executor.submit(tokens.load, encoding).result(timeout=120)  # the processes are up
            for pid in list(executor._processes):  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGKILL)
            yield executor

    monkeypatch.setattr(engine, "counting_pool", killed_pool)
    expected = _golden_path("funds_qa.jsonl", "davinci").read_text(encoding="utf-8")
    assert _dump(render(DATA / "funds_qa.jsonl", CASES["davinci"], tmp_path / "out")) == expected


def _render_into(queue: Any, rel: str, case: str, out_dir: Path) -> None:
    try:
        queue.put(_dump(render(DATA / rel, CASES[case], out_dir)))
    except BaseException as exc:  # the parent asserts on what happened
        queue.put(repr(exc))


def test_a_daemonic_process_counts_on_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Celery prefork child is daemonic and may not start processes: preparing a large file
    there counts on threads instead of failing ("internal error while preparing the file")."""
    import multiprocessing

    from service.core.datasets import tokens

    monkeypatch.setattr(tokens, "PROCESS_MIN_BYTES", 0)
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(
        target=_render_into, args=(queue, "funds_qa.jsonl", "davinci", tmp_path / "out"), daemon=True
    )
    child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(30)
    assert got == _golden_path("funds_qa.jsonl", "davinci").read_text(encoding="utf-8")


def _write_all() -> None:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    _LISTED.write_text(json.dumps(_BAD) + "\n")
    for rel in FILES:
        for case, options in CASES.items():
            with tempfile.TemporaryDirectory() as tmp:
                text = _dump(render(DATA / rel, options, Path(tmp) / "out"))
            _golden_path(rel, case).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    _write_all()
    sys.exit(0)
