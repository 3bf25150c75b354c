"""schemathesis (v4) against the live server from the committed openapi.yaml: no failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_failures(stack, tmp_path):
    token = stack.key()
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            str(REPO / "openapi.yaml"),
            "--url",
            stack.base_url,
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            # Streaming responses (SSE) are out of scope for schemathesis; the sandbox takes its own key.
            "--exclude-path-regex",
            r"(/events$|^/sandbox/)",
            # Schema-valid bodies naming models or files that do not exist are rightly refused
            # (400/422); that business rule cannot live in a JSON schema, so this one check is off.
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "10",
            "--generation-deterministic",
            "--request-timeout",
            "20",
            "--max-time",
            "150",
            "--workers",
            "1",  # two threads crash CPython 3.11's ast.parse inside hypothesis (SystemError, seen here)
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-12000:]
