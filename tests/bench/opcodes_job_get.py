"""Python bytecodes executed per request (job GET, /healthz, bare Flask): a count that load cannot move.

    .venv/bin/python tests/bench/opcodes_job_get.py job --requests 200 [--top 40]
    PYTHONPATH=/tmp/before .venv/bin/python tests/bench/opcodes_job_get.py job   # another checkout

On a shared machine the CPU time per request moves by ±15 % from run to run; the number of
bytecodes the interpreter executes per request does not move at all, so it shows what a change
to the request path saves. It counts Python code only (C code such as the JSON encoder or the
socket calls is one call each), with a trace function, through WSGI directly (no test client).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a file: importable, after any PYTHONPATH checkout
    sys.path.append(str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=("job", "healthz", "bare"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--top", type=int, default=0, help="also list the functions that execute the most")
    args = parser.parse_args()

    from cryptography.fernet import Fernet
    from werkzeug.test import EnvironBuilder

    from service.app import create_app
    from service.core import auth
    from service.core.store import Store
    from service.core.store import jobs as repo
    from service.settings import Settings
    from tests.bench import bare_app
    from tests.bench.job_get import job_record
    from tests.support.procs import RedisServer

    work = Path(tempfile.mkdtemp(prefix="tuneline-opcodes-"))
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
        for handler in logging.getLogger().handlers:  # the request log is formatted, not printed
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
        url = f"/v1/fine_tuning/jobs/{job['id']}"
        target, path, headers = {
            "job": (app, url, {"Authorization": f"Bearer {token}"}),
            "healthz": (app, "/healthz", {}),
            "bare": (bare_app.app, url, {}),
        }[args.target]
        environ = EnvironBuilder(path=path, headers=headers).get_environ()

        def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
            assert status.startswith("200"), status

        def call() -> None:
            body = target(dict(environ), start_response)
            b"".join(body)
            getattr(body, "close", lambda: None)()

        for _ in range(50):  # warm-up: caches, connections, first-request work
            call()
        counts: collections.Counter[tuple[str, str]] = collections.Counter()

        def tracer(frame: FrameType, _event: str, _arg: Any) -> Any:
            frame.f_trace_opcodes = True
            key = (frame.f_code.co_filename, frame.f_code.co_name)

            def local(_frame: FrameType, event: str, _arg: Any) -> Any:
                if event == "opcode":
                    counts[key] += 1
                return local

            return local

        sys.settrace(tracer)
        try:
            for _ in range(args.requests):
                call()
        finally:
            sys.settrace(None)
        n = args.requests
        print(f"{args.target}: {sum(counts.values()) / n:.0f} bytecodes per request")
        for (filename, name), count in counts.most_common(args.top):
            print(f"{count / n:8.0f}  {filename.split('site-packages/')[-1]}:{name}")
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
