"""Start and stop real processes for tests: redis-server, gunicorn, Celery worker and beat."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx2
import redis

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class RedisServer:
    """A private redis-server on a free port; AOF with fsync always when ``durable``."""

    def __init__(self, workdir: Path, durable: bool = False) -> None:
        self.workdir = workdir
        self.durable = durable
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        args = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "no",
        ]
        if self.durable:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_until(client.ping, 10, what=f"redis on {self.port}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (AOF is replayed when durable)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def base_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELINE_", "OPENAI_"))}
    env.update(settings_env)
    env["PYTHONPATH"] = str(REPO)
    return env


class Proc:
    """A child process with its output in a log file, killed on stop."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path, cwd: Path = REPO) -> None:
        self.args = args
        self.env = dict(env)
        self.log = log
        self.cwd = cwd  # another checkout serves its own code from there (benchmarks' "before")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """SIGKILL the whole process group (a Celery worker and its pool children)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def start_api(env: Mapping[str, str], port: int, log: Path, workers: int = 2) -> Proc:
    proc = Proc(
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            "python:service.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--access-logfile",
            "-",
            "service.wsgi:app",
        ],
        env,
        log,
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        # a loaded 2-core machine has taken over 30 s to import the app into two workers
        wait_until(lambda: httpx2.get(url + "/healthz", timeout=1).status_code == 200, 90, what="api")
    except TimeoutError:
        proc.stop()  # nobody else holds it: left running, it would outlive the test session
        raise RuntimeError("api did not start:\n" + proc.tail()) from None
    return proc


def start_worker(
    env: Mapping[str, str],
    log: Path,
    queues: str,
    name: str,
    concurrency: int = 2,
    extra_args: list[str] | None = None,
    cwd: Path = REPO,
) -> Proc:
    return Proc(
        [
            str(VENV_BIN / "celery"),
            "-A",
            "workers.main",
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *(extra_args or []),
        ],
        env,
        log,
        cwd,
    ).start()


def start_beat(env: Mapping[str, str], log: Path, workdir: Path, cwd: Path = REPO) -> Proc:
    return Proc(
        [
            str(VENV_BIN / "celery"),
            "-A",
            "workers.main",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(workdir / "beat-schedule"),
        ],
        env,
        log,
        cwd,
    ).start()
