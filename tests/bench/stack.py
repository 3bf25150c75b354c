"""A whole Tuneline stack for the pipeline and webhook benchmarks: redis, API, worker, beat."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from service.core import auth
from service.core.store import Store
from service.core.store import jobs as repo
from tests.bench.common import service_env, start_gunicorn
from tests.support.procs import REPO, Proc, RedisServer, free_port, start_beat, start_worker, wait_until

QUEUES = "datasets,provider,poll,webhooks,maintenance"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class BenchStack:
    workdir: Path
    redis: RedisServer
    store: Store
    base_url: str
    token: str
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    @property
    def api_log(self) -> Path:
        return self.workdir / "api.log"

    def post_json(self, client: httpx2.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = client.post(self.base_url + path, json=body)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def upload(self, data: bytes) -> str:
        with httpx2.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as c:
            r = c.post(
                self.base_url + "/v1/files",
                files={"file": ("train.jsonl", data)},
                data={"purpose": "fine-tune"},
            )
            r.raise_for_status()
            file_id = str(r.json()["id"])
            wait_until(
                lambda: c.get(f"{self.base_url}/v1/files/{file_id}").json()["status"] == "processed",
                120,
                what="file processed",
            )
        return file_id

    def create_jobs(self, bodies: list[dict[str, Any]], threads: int = 8) -> list[str]:
        local = threading.local()

        def one(body: dict[str, Any]) -> str:
            if not hasattr(local, "client"):
                local.client = httpx2.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
            return str(self.post_json(local.client, "/v1/fine_tuning/jobs", body)["id"])

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, bodies))

    def wait_terminal(
        self, job_ids: list[str], timeout: float, progress: Callable[[int], None] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Job records once all are terminal (read from Redis, so the API is not loaded by it)."""
        deadline = time.monotonic() + timeout
        done: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            # One MGET for the jobs not yet done: the harness shares the machine's CPUs with the
            # stack it measures, so its reads stay cheap.
            waiting = [job_id for job_id in job_ids if job_id not in done]
            jobs = self.store.load_many([repo.key(j) for j in waiting])
            for job_id, job in zip(waiting, jobs, strict=True):
                if job is not None and job["status"] in TERMINAL:
                    done[job_id] = job
            if progress:
                progress(len(done))
            if len(done) == len(job_ids):
                return done
            time.sleep(2.0)
        raise TimeoutError(
            f"{len(job_ids) - len(done)} of {len(job_ids)} jobs not terminal after {timeout} s"
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.redis.stop()


@contextlib.contextmanager
def bench_stack(
    workdir: Path, concurrency: int = 4, tree: Path | None = None, **settings: str
) -> Iterator[BenchStack]:
    """Production settings, non-durable Redis (AOF off: memory and latency, not durability, are
    measured here), one API (2 gunicorn workers), one worker on every short queue, and beat.

    ``tree``: serve another checkout's code (e.g. ``git archive`` of main before a change)."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(workdir / "redis").start()
    port = free_port()
    env = service_env(redis, workdir / "data", TUNELINE_PORT=str(port), **settings)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    store = Store.from_url(redis.url)
    _, token = auth.create_key(store, "bench", name="bench")
    stack = BenchStack(workdir, redis, store, f"http://127.0.0.1:{port}", token, env)
    try:
        stack.procs.append(
            start_gunicorn("service.wsgi:app", env, port, stack.api_log, workers=2, chdir=tree)
        )
        cwd = tree or REPO
        stack.procs.append(start_worker(env, workdir / "worker.log", QUEUES, "bench", concurrency, cwd=cwd))
        stack.procs.append(start_beat(env, workdir / "beat.log", workdir, cwd=cwd))
        yield stack
    finally:
        stack.stop()


def request_log(path: Path) -> Iterator[dict[str, Any]]:
    """The API's JSON request log lines (``msg == "request"``), each with ``ts``, ``method``, ``path``."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if '"msg": "request"' not in line:
                continue
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def redis_used_memory(store: Store) -> int:
    return int(store.r.info("memory")["used_memory"])  # type: ignore[index]
