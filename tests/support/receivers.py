"""Webhook receivers for process tests and benchmarks: real HTTP servers on 127.0.0.1 in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.procs import free_port


@dataclass
class Hit:
    """One request as the receiver saw it; ``answered_at`` is set once its 200 went out."""

    headers: dict[str, str]
    body: bytes
    received_at: float
    answered_at: float | None = None


class HookReceiver:
    """Answers 200 to every POST; with ``hold_first_s`` it holds the first request open that long
    before answering (``holding`` is set meanwhile), so a test can kill the sender mid-delivery."""

    def __init__(self, hold_first_s: float = 0.0) -> None:
        self.hold_first_s = hold_first_s
        self.hits: list[Hit] = []
        self.holding = threading.Event()
        self.port = free_port()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answered(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.answered_at is not None]

    def start(self) -> HookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hit = Hit({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with receiver._lock:
                    receiver.hits.append(hit)
                    first = len(receiver.hits) == 1
                if first and receiver.hold_first_s:
                    receiver.holding.set()
                    time.sleep(receiver.hold_first_s)
                with contextlib.suppress(OSError):  # the sender may be gone (killed) by now
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    self.wfile.flush()
                    hit.answered_at = time.time()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
