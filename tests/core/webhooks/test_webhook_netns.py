"""Re-runs the tests that open sockets inside a private network namespace (``unshare -n``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ISOLATED = ["test_webhook_sender.py"]  # every test here that opens a socket


def test_socket_tests_pass_in_a_private_network_namespace(netns_state: Any) -> None:
    if netns_state.inside:
        pytest.skip("already inside a private network namespace")
    if not netns_state.available:
        pytest.skip("unshare -n is not permitted here; the socket tests ran in place")
    files = [str((HERE / name).relative_to(ROOT)) for name in ISOLATED]
    command = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *files,
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "TUNELINE_REQUIRE_NETNS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
