"""``make run``: Redis (AOF), API, worker and beat in the foreground, a dev key and a demo job."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
from cryptography.fernet import Fernet

from service.core import auth
from service.core.store import Store
from service.settings import Settings

VAR = Path("var")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _secret_key() -> str:
    path = VAR / "secret.key"
    if not path.exists():
        VAR.mkdir(exist_ok=True)
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _start_redis(procs: list[subprocess.Popen[bytes]]) -> str:
    url = os.environ.get("TUNELINE_REDIS_URL")
    if url and _redis_answers(url):
        print(f"using Redis at {url}")
        return url
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit(
            "redis-server not found: install it (apt-get install redis-server) or set TUNELINE_REDIS_URL"
        )
    workdir = VAR / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    procs.append(
        subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(workdir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                "redis.log",
            ],
        )
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _redis_answers(url):
            print(f"started redis-server with AOF under {workdir} on port {port}")
            return url
        time.sleep(0.1)
    sys.exit("redis-server did not start; see var/redis/redis.log")


def _train_extra_installed() -> bool:
    """The local trainer's libraries are importable (looked up, not imported: no torch here)."""
    return all(importlib.util.find_spec(name) for name in ("torch", "transformers", "peft", "trl"))


def _local_workers(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """One training job at a time (nothing prefetched behind it), and a model-caching infer worker."""
    celery = [str(BIN / "celery"), "-A", "workers.main", "worker", "--loglevel", "INFO", "--concurrency", "1"]
    return [
        subprocess.Popen([*celery, "-Q", "train", "-n", "train@%h", "--disable-prefetch"], env=env),
        subprocess.Popen([*celery, "-Q", "infer", "-n", "infer@%h"], env=env),
    ]


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so `kill`, `timeout` or a service manager stop the stack as Ctrl-C does


def main() -> None:
    # Without this, SIGTERM ends this process at once and leaves redis, gunicorn and the workers
    # running; as KeyboardInterrupt it goes through the `finally` below that stops them.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    procs: list[subprocess.Popen[bytes]] = []
    os.environ.setdefault("TUNELINE_ENV", "development")
    os.environ.setdefault("TUNELINE_DATA_DIR", str((VAR / "data").resolve()))
    os.environ.setdefault("TUNELINE_SECRET_KEY", _secret_key())
    os.environ.setdefault("TUNELINE_LOCAL_MODEL_ROOTS", str((VAR / "models").resolve()))
    os.environ.setdefault("TUNELINE_WEBHOOK_ALLOW_LOOPBACK", "1")
    os.environ.setdefault("TUNELINE_POLL_INTERVAL_S", "2")
    os.environ.setdefault("TUNELINE_SANDBOX_TIME_SCALE", "0.3")
    os.environ.setdefault("TUNELINE_METRICS_ENABLED", "1")
    try:
        os.environ["TUNELINE_REDIS_URL"] = _start_redis(procs)
        settings = Settings.from_env()
        port = settings.port
        env = dict(os.environ)
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "-c",
                    "python:service.gunicorn_conf",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "service.wsgi:app",
                ],
                env=env,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "celery"),
                    "-A",
                    "workers.main",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "-Q",
                    "datasets,provider,poll,webhooks,maintenance",
                    "--concurrency",
                    "2",
                ],
                env=env,
            )
        )
        local = _train_extra_installed()
        if local:
            procs.extend(_local_workers(env))
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "celery"),
                    "-A",
                    "workers.main",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(VAR / "beat-schedule"),
                ],
                env=env,
            )
        )
        _, token = auth.create_key(Store.from_url(settings.redis_url), "dev", "member", "make run")
        base = f"http://127.0.0.1:{port}"
        from service.demo.run import run_demo

        if local and os.environ.get("TUNELINE_DEMO") == "local":
            from service.demo.local import run_local_demo

            run_local_demo(base, token)
        else:
            run_demo(base, token, settings)
        if local:
            print(
                "\nLocal trainer: train and infer workers are running. Demo: TUNELINE_DEMO=local make run"
                "\n  (or: tuneline models build-demo --out var/models/demo, then a job with provider"
                ' "local" and model "<absolute path of var/models/demo>"; README: Local trainer)'
            )
        else:
            print("\nLocal trainer: off (pip install -e '.[train]' to enable it)")
        print(f"\nAPI:     {base}  (OpenAPI: {base}/openapi.json)")
        print(f"Console: {base}/console/  (sign in with the key below)")
        print(f"API key: {token}")
        print("Ctrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a component exited; stopping the stack", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
