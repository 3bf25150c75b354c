"""A real local Ray head (``ray start --head --block``) on free ports, for the Ray executor's tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import httpx2
import psutil

from tests.support.procs import VENV_BIN, free_port, wait_until

RAY_MISSING = "the ray extra (ray[default,train]) is not installed: pip install -e '.[train,ray]'"


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.train") is not None


class RayHead:
    """One head node with ``num_cpus`` CPUs and the dashboard (the Jobs API) on a free port.

    Every port Ray would otherwise take by default is chosen free (its GCS default, 6379, is the
    shared Redis's). ``--block`` keeps ``ray start`` as the parent of every Ray process, so
    stopping it by its own process tree never touches another Ray on the machine.
    """

    def __init__(self, log: Path, num_cpus: int = 2) -> None:
        self.log = log
        self.num_cpus = num_cpus
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        # Unix socket paths are limited to ~107 bytes: keep the session directory short.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The Jobs API (dashboard) URL, what ``TUNELINE_RAY_ADDRESS`` names."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, env: dict[str, str], timeout: float = 120) -> RayHead:
        ports = [free_port() for _ in range(8)]
        args = [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={ports[0]}",
            f"--node-manager-port={ports[1]}",
            f"--object-manager-port={ports[2]}",
            f"--metrics-export-port={ports[3]}",
            f"--dashboard-agent-listen-port={ports[4]}",
            f"--dashboard-agent-grpc-port={ports[5]}",
            f"--runtime-env-agent-port={ports[6]}",
            f"--temp-dir={self.temp_dir}",
            "--object-store-memory=100000000",
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_until(self._jobs_api_up, timeout, interval=0.5, what="the Ray Jobs API")
        except TimeoutError:
            tail = self.log.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"ray start --head did not come up:\n{tail}") from None
        return self

    def _jobs_api_up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {self.proc.returncode}")
        try:
            response = httpx2.get(f"{self.address}/api/version", timeout=2)
        except httpx2.HTTPError:
            return False
        return response.status_code == 200

    def stop(self) -> None:
        """SIGTERM this head's process tree (and group), then SIGKILL what is left."""
        if self.proc is None:
            return
        try:
            tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def ray_processes(head: RayHead, title: str) -> list[psutil.Process]:
    """The head's descendants whose command line contains ``title`` (Ray names its actor
    processes ``ray::<Class>...``, e.g. ``ray::RayTrainWorker``)."""
    assert head.proc is not None
    try:
        tree = psutil.Process(head.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            if title in " ".join(proc.cmdline()):
                found.append(proc)
    return found
