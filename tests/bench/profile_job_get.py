"""CPU per request of ``GET /v1/fine_tuning/jobs/{id}`` in one process, and its profile.

    .venv/bin/python tests/bench/profile_job_get.py --requests 3000            # JSON line of figures
    .venv/bin/python tests/bench/profile_job_get.py --requests 3000 --profile  # + pyinstrument tree

The app runs in this process (Flask's test client, no gunicorn, no sockets to the client) against
a private redis-server, so the figures are the request path's own CPU: this process's CPU time
plus redis-server's, per request. CPU time, unlike wall time, hardly moves with the other load of
a shared machine. The job GET benchmark runs this file in the checkout under test and, with
``BENCH_BEFORE_TREE``, in another checkout (``PYTHONPATH`` first), alternating.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a file: importable, after any PYTHONPATH checkout
    sys.path.append(str(REPO))


def cpu_per_request(client: object, url: str, headers: dict[str, str], n: int, redis_pid: int) -> float:
    """Microseconds of CPU (this process + redis-server) per request."""
    redis_proc = psutil.Process(redis_pid)

    def now() -> float:
        t = redis_proc.cpu_times()
        return time.process_time() + t.user + t.system

    start = now()
    for _ in range(n):
        response = client.get(url, headers=headers)  # type: ignore[attr-defined]
        assert response.status_code == 200, response.status_code
    return (now() - start) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="print a pyinstrument profile of the job GET")
    args = parser.parse_args()

    from service.app import create_app
    from service.core import auth
    from service.core.store import Store
    from service.core.store import jobs as repo
    from service.settings import Settings
    from tests.bench import bare_app
    from tests.bench.job_get import job_record
    from tests.support.procs import RedisServer

    work = Path(tempfile.mkdtemp(prefix="tuneline-profile-"))
    redis = RedisServer(work / "redis").start()
    try:
        store = Store.from_url(redis.url)
        _, token = auth.create_key(store, "bench", name="bench")
        job = job_record("bench")
        repo.insert(store, job, job["created_at"] * 1000)
        env = {
            "TUNELINE_ENV": "production",
            "TUNELINE_REDIS_URL": redis.url,
            "TUNELINE_DATA_DIR": str(work / "data"),
            "TUNELINE_SECRET_KEY": Fernet.generate_key().decode(),
            "TUNELINE_LOG_LEVEL": "INFO",
        }
        app = create_app(Settings.from_env(env))
        # The same app with both caches off (every request reads the key and the job from Redis).
        nocache = create_app(
            Settings.from_env({**env, "TUNELINE_AUTH_CACHE_S": "0", "TUNELINE_READ_CACHE_S": "0"})
        ).test_client()
        for handler in logging.getLogger().handlers:  # the request log is formatted, not printed
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
        client = app.test_client()
        bare = bare_app.app.test_client()
        url = f"/v1/fine_tuning/jobs/{job['id']}"
        hdr = {"Authorization": f"Bearer {token}"}
        assert redis.proc is not None
        for c in (client, nocache, bare):  # warm up
            cpu_per_request(c, url, hdr, 200, redis.proc.pid)
        figures = {
            "job_get_us": cpu_per_request(client, url, hdr, args.requests, redis.proc.pid),
            "job_get_nocache_us": cpu_per_request(nocache, url, hdr, args.requests, redis.proc.pid),
            "healthz_us": cpu_per_request(client, "/healthz", {}, args.requests, redis.proc.pid),
            "bare_us": cpu_per_request(bare, url, {}, args.requests, redis.proc.pid),
        }
        import service

        figures["tree"] = str(Path(service.__file__).resolve().parents[1])
        figures["hiredis"] = sys.modules.get("hiredis") is not None
        print(json.dumps(figures), flush=True)
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            with profiler:
                for _ in range(args.requests):
                    client.get(url, headers=hdr)
            print(profiler.output_text(unicode=True, color=False))
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
