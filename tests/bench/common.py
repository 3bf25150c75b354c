"""Shared helpers for the benchmarks: sizes, machine facts, RSS sampling, gunicorn launching."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import psutil
from cryptography.fernet import Fernet

from tests.support.procs import REPO, VENV_BIN, Proc, RedisServer, base_env, wait_until

MB = 1_000_000
MIB = 1024 * 1024


@dataclass
class Options:
    """What every benchmark gets from ``run_all``: the quick switch and a scratch directory."""

    quick: bool
    workdir: Path


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / (1024**3)
    return (
        f"{os.cpu_count()} CPU(s) (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"{mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def service_env(redis: RedisServer, data_dir: Path, **extra: str) -> dict[str, str]:
    """A production-like environment (INFO request logs, a real secret key) for the API."""
    return base_env(
        {
            "TUNELINE_ENV": "production",
            "TUNELINE_REDIS_URL": redis.url,
            "TUNELINE_DATA_DIR": str(data_dir),
            "TUNELINE_SECRET_KEY": Fernet.generate_key().decode(),
            "TUNELINE_LOG_LEVEL": "INFO",
            **extra,
        }
    )


def start_gunicorn(
    app_spec: str,
    env: Mapping[str, str],
    port: int,
    log: Path,
    workers: int,
    threads: int = 4,
    chdir: Path | None = None,
) -> Proc:
    """gunicorn with the same arguments as ``tests.support.procs.start_api`` (gthread, access log
    on), for any WSGI app, so Tuneline and the bare app are served identically; ``chdir`` serves
    the app from another checkout (imports resolve there first)."""
    proc = Proc(
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            str(Path(__file__).resolve().parents[2] / "service" / "gunicorn_conf.py"),
            *(["--chdir", str(chdir)] if chdir else []),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--access-logfile",
            "-",
            app_spec,
        ],
        env,
        log,
        # Started there too: gunicorn puts its starting directory ahead of ``--chdir`` on the
        # import path, so a "before" checkout started from this one served this one's code.
        cwd=chdir or REPO,
    ).start()
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_until(lambda: httpx2.get(url, timeout=1).status_code == 200, 30, what=app_spec)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"{app_spec} did not start:\n{proc.tail()}") from None
    return proc


def worker_pids(master_pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(master_pid).children(recursive=True)]


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def rss_of(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += psutil.Process(pid).memory_info().rss
    return total


@dataclass
class RssSampler:
    """Samples the summed RSS of some processes every ``interval`` seconds in a thread."""

    pids: Callable[[], list[int]]
    interval: float = 0.02
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), rss_of(self.pids())))
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return max(v for _, v in self.samples)

    @property
    def median(self) -> int:
        return int(statistics.median(v for _, v in self.samples))
