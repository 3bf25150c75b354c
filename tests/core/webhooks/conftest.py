"""Fixtures for the webhook core: local receivers on 127.0.0.1 and guards against real network."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server in a thread; replies with ``status``/``headers`` after ``delay_s``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _start(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            receiver.requests.append(
                Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
            )
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            try:
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)
            except OSError:
                pass  # the client gave up (timeout tests)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if receiver.tls is not None:
        server.socket = receiver.tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


@pytest.fixture
def receiver_factory(private_network: None) -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        receiver.server = _start(receiver)
        servers.append(receiver.server)
        return receiver

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(receiver_factory: Callable[..., Receiver]) -> Receiver:
    return receiver_factory()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a decision test tries DNS or opens a connection."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"network access attempted in a decision test: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def in_private_netns() -> bool:
    """True when this process sees no network interface but loopback (``unshare -n``)."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        return False
    return names == {"lo"}


def netns_available() -> bool:
    """True when ``unshare -n`` works here (root, or user namespaces) and ``ip`` can raise lo."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    try:
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def private_network() -> None:
    """For tests that open sockets: run them only inside a private network namespace.

    Outside one, they are skipped here and ``test_webhook_netns.py`` re-runs them under
    ``unshare -n`` (``TUNELINE_REQUIRE_NETNS=1``). Where ``unshare -n`` is not possible (no
    root, no user namespaces) they run in place: they only ever dial 127.0.0.1.
    """
    if in_private_netns():
        return
    if os.environ.get("TUNELINE_REQUIRE_NETNS") == "1":
        pytest.fail("TUNELINE_REQUIRE_NETNS=1 but this process can see interfaces besides lo")
    if netns_available():
        pytest.skip("runs inside a private network namespace (see test_webhook_netns.py)")


@dataclass(frozen=True)
class NetnsState:
    inside: bool
    available: bool


@pytest.fixture(scope="session")
def netns_state() -> NetnsState:
    inside = in_private_netns()
    return NetnsState(inside=inside, available=not inside and netns_available())
