"""Fixtures mirroring the app: a private real Redis, settings, app, client, and a live stack."""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from service.app import create_app
from service.core import auth
from service.core.dispatch import RecordingDispatcher
from service.core.store import Store
from service.settings import Settings
from tests.support.procs import RedisServer

SMOLLM2_OPT_IN = "TUNELINE_TEST_SMOLLM2"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the pretrained SmolLM2-135M take minutes each on a CPU, beyond the suite's budget:
    they run when asked (``make test-smollm2`` sets TUNELINE_TEST_SMOLLM2=1)."""
    if os.environ.get(SMOLLM2_OPT_IN) == "1":
        return
    skip = pytest.mark.skip(reason=f"SmolLM2 test: opt-in with {SMOLLM2_OPT_IN}=1 (make test-smollm2)")
    for item in items:
        if item.get_closest_marker("smollm2") is not None:
            item.add_marker(skip)


# Sample datasets (Chinese Q&A, chat) and the corpus of bad inputs, kept in the repository.
SAMPLE_DATA = Path(__file__).resolve().parent / "data"
_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path, secret_key: str) -> Settings:
    # Each test gets a fresh logical database (1-15 rotate; flushed before use).
    db = next(_db_counter) % 15 + 1
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    Store.from_url(url).r.flushdb()
    return Settings(
        env="test",
        redis_url=url,
        data_dir=tmp_path / "data",
        secret_key=secret_key,
        webhook_allow_loopback=True,
        max_upload_bytes=1024 * 1024,
        # A revoked key is refused at once; the key cache has its own tests (tests/core/test_auth.py).
        auth_cache_s=0.0,
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.from_url(settings.redis_url)


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def app(settings: Settings, dispatcher: RecordingDispatcher):  # type: ignore[no-untyped-def]
    application = create_app(settings, dispatcher=dispatcher)
    application.testing = True
    return application


@pytest.fixture
def live_base_url(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The test app served over real HTTP in a thread (for clients such as the SDK and the CLI)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def make_key(store: Store):  # type: ignore[no-untyped-def]
    def make(tenant: str | None = None, role: str = "member") -> str:
        _, token = auth.create_key(store, tenant or f"t{secrets.token_hex(4)}", role)
        return token

    return make


@pytest.fixture
def sample_data() -> Path:
    return SAMPLE_DATA
