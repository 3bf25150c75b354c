"""A live stack for end-to-end tests: real redis-server, gunicorn and Celery worker processes."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.core import auth
from service.core.store import Store
from tests.conftest import SAMPLE_DATA
from tests.support.procs import Proc, RedisServer, base_env, free_port, start_api, start_beat, start_worker


@dataclass
class Stack:
    redis: RedisServer
    env: dict[str, str]
    workdir: Path
    base_url: str = ""
    api: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    beat: Proc | None = None

    @property
    def store(self) -> Store:
        return Store.from_url(self.redis.url)

    def key(self, tenant: str | None = None, role: str = "member") -> str:
        _, token = auth.create_key(self.store, tenant or f"t{secrets.token_hex(4)}", role)
        return token

    def start_worker(
        self, queues: str = "datasets,provider,poll,webhooks,maintenance", name: str = "w"
    ) -> Proc:
        proc = start_worker(self.env, self.workdir / f"worker-{name}-{len(self.workers)}.log", queues, name)
        self.workers.append(proc)
        return proc

    def start_train_worker(self) -> Proc:
        """A worker on the train queue: one job at a time, nothing prefetched behind it."""
        proc = start_worker(
            self.env,
            self.workdir / f"worker-train-{len(self.workers)}.log",
            "train",
            f"train{len(self.workers)}",
            concurrency=1,
            extra_args=["--disable-prefetch"],
        )
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        parts = []
        for proc in [self.api, self.beat, *self.workers]:
            if proc is not None:
                parts.append(f"--- {proc.log.name}\n{proc.tail(40)}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in [*self.workers, self.beat, self.api]:
            if proc is not None:
                proc.stop()


def make_stack(
    workdir: Path, secret_key: str, durable: bool = False, port: int | None = None, **extra_env: str
) -> Stack:
    """``port``: the API's, when the caller must know it beforehand (e.g. for a URL in ``extra_env``)."""
    redis = RedisServer(workdir / "redis", durable=durable).start()
    port = port or free_port()
    env = base_env(
        {
            "TUNELINE_ENV": "test",
            "TUNELINE_REDIS_URL": redis.url,
            "TUNELINE_DATA_DIR": str(workdir / "data"),
            "TUNELINE_SECRET_KEY": secret_key,
            "TUNELINE_PORT": str(port),
            "TUNELINE_WEBHOOK_ALLOW_LOOPBACK": "1",
            "TUNELINE_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024),
            "TUNELINE_LOG_LEVEL": "INFO",
            **extra_env,
        }
    )
    stack = Stack(redis=redis, env=env, workdir=workdir)
    try:
        stack.api = start_api(env, port, workdir / "api.log")
    except BaseException:
        redis.stop()
        raise
    stack.base_url = f"http://127.0.0.1:{port}"
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[Stack]:
    """One shared stack: API, a worker on every short queue, and beat."""
    workdir = tmp_path_factory.mktemp("stack")
    s = make_stack(workdir, secret_key, TUNELINE_SANDBOX_TIME_SCALE="0.02", TUNELINE_POLL_INTERVAL_S="0.5")
    try:
        s.start_worker()
        s.beat = start_beat(s.env, workdir / "beat.log", workdir)
        yield s
    finally:  # also when a worker or beat fails to start: nothing outlives the session
        s.stop()
        s.redis.stop()


class Hooks:
    """A local webhook receiver that records every delivery (headers lower-cased, raw body) and
    answers ``codes`` in turn, the last one repeating (default: always 200)."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.codes = codes or [200]
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hooks.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(hooks.codes[min(len(hooks.received), len(hooks.codes)) - 1])
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.server.shutdown()


LOCAL_QUEUES = "datasets,provider,poll,webhooks,maintenance"


@pytest.fixture(scope="session")
def local_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny from-scratch base model (random weights, tokenizer trained on the sample data), built
    once per session with the engine's build-demo; tests needing it skip without the train extra."""
    pytest.importorskip(
        "torch", reason="the local trainer needs the `train` extra (torch); pip install -e '.[train]'"
    )
    from service.training.demo import build_demo

    out = tmp_path_factory.mktemp("models") / "tiny"
    build_demo(out, SAMPLE_DATA / "funds_chat.jsonl")
    return out


def make_local_stack(
    workdir: Path, secret_key: str, models: Path, trainer: bool = True, **extra_env: str
) -> Stack:
    """API, a worker on the short queues, a train worker and an infer worker (concurrency 1), beat.

    The lease is a few seconds so a killed training worker's job is re-queued quickly; ``models``
    is the directory local jobs may load base models from. ``trainer=False``: no train worker yet.
    """
    s = make_stack(
        workdir,
        secret_key,
        TUNELINE_LOCAL_MODEL_ROOTS=str(models),
        TUNELINE_POLL_INTERVAL_S="0.5",
        TUNELINE_TRAIN_LEASE_S="4",
        TUNELINE_TRAIN_DEVICE="cpu",
        TUNELINE_TRAIN_THREADS="1",
        HF_HUB_OFFLINE="1",
        **extra_env,
    )
    s.start_worker(LOCAL_QUEUES, name="short")
    if trainer:
        s.start_train_worker()
    s.workers.append(start_worker(s.env, workdir / "worker-infer.log", "infer", "infer", concurrency=1))
    s.beat = start_beat(s.env, workdir / "beat.log", workdir)
    return s


@pytest.fixture(scope="module")
def local(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str, local_base_model: Path
) -> Iterator[Stack]:
    """The local-trainer stack, one per test module (its train worker is busy for a module)."""
    s = make_local_stack(tmp_path_factory.mktemp("local"), secret_key, local_base_model.parent)
    yield s
    s.stop()
    s.redis.stop()
