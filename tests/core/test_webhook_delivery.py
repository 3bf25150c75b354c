"""Webhook delivery from the outbox against real local receivers, with a controllable clock."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import standardwebhooks

from service.core.auth import Principal
from service.core.secrets_box import SecretBox
from service.core.store import keys
from service.core.webhooks import delivery as wd
from service.core.webhooks import schedule
from service.core.webhooks.outbox import queue_webhook
from tests.support.procs import free_port


class Receiver:
    """A real HTTP receiver whose answers are scripted (status codes in order, then 200)."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key)


JOB = {
    "id": "ftjob-abc",
    "tenant": "acme",
    "status": "succeeded",
    "stage": "done",
    "model": "m",
    "created_at": 1,
    "webhook": {"url": "", "events": ["fine_tuning.job.succeeded"]},
}


def queue(store, url: str, now: float) -> str:
    job = {**JOB, "webhook": {"url": url, "events": ["fine_tuning.job.succeeded"]}}
    pipe = store.r.pipeline(transaction=True)
    delivery_id = queue_webhook(
        pipe, job, "fine_tuning.job.succeeded", now, {**job, "object": "fine_tuning.job"}
    )
    pipe.execute()
    assert delivery_id
    return delivery_id


def test_both_official_verifiers_accept_deliveries(store, box, receiver):
    receiver.start()
    delivery_id = queue(store, receiver.url, 1000.0)
    import time

    now = time.time()
    result = wd.deliver(store, box, delivery_id, allow_loopback=True, now=now)
    assert result["status"] == "delivered"
    headers, body = receiver.requests[0]
    secret = wd.get_secret(store, box, "acme")["secret"]
    assert secret.startswith("whsec_")
    event = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1").webhooks.unwrap(
        body, headers, secret=secret
    )
    assert event.type == "fine_tuning.job.succeeded"
    payload = standardwebhooks.Webhook(secret).verify(body, headers)
    assert payload["data"]["id"] == "ftjob-abc" and payload["data"]["status"] == "succeeded"
    assert payload["object"] == "event" and headers["webhook-id"] == payload["id"]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body.replace(b"succeeded", b"failed"), headers)
    # The stored secret is encrypted, never plaintext.
    assert secret not in (store.r.get(keys.webhook_secret("acme")) or "")


def test_retry_schedule_same_id_until_receiver_recovers(store, box, receiver):
    """Down (connection refused), then 500s, then up: same webhook-id, schedule followed."""
    t0 = 1_800_000_000.0
    delivery_id = queue(store, receiver.url, t0)
    rng = random.Random(7)
    now = t0
    # Attempt 1: nothing listens on the port yet.
    d = wd.deliver(store, box, delivery_id, allow_loopback=True, now=now, rng=rng, timeout=2)
    assert d["status"] == "retrying" and d["attempts"][0]["status_code"] is None
    assert schedule.SCHEDULE[1] * 0.9 <= d["next_attempt_at"] - now <= schedule.SCHEDULE[1] * 1.1
    receiver.script = [500, 500]
    receiver.start()
    for _ in range(3):
        now = d["next_attempt_at"]
        assert wd.claim_due(store, now) == [delivery_id]
        d = wd.deliver(store, box, delivery_id, allow_loopback=True, now=now, rng=rng)
    assert d["status"] == "delivered"
    assert [a["status_code"] for a in d["attempts"]] == [None, 500, 500, 200]
    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert len(ids) == 1 and len(receiver.requests) == 3
    assert wd.claim_due(store, now + 10**6) == []  # nothing left in the outbox
    # Timestamps are fresh per attempt (signed when sent, never pre-signed).
    assert len({h["webhook-timestamp"] for h, _ in receiver.requests}) == 3


def test_gives_up_after_the_last_scheduled_attempt(store, box, receiver):
    receiver.script = [500] * 20
    receiver.start()
    now = 1_800_000_000.0
    delivery_id = queue(store, receiver.url, now)
    rng = random.Random(1)
    d = wd.deliver(store, box, delivery_id, allow_loopback=True, now=now, rng=rng)
    total = 0.0
    while d["status"] == "retrying":
        total += d["next_attempt_at"] - now
        now = d["next_attempt_at"]
        d = wd.deliver(store, box, delivery_id, allow_loopback=True, now=now, rng=rng)
    assert d["status"] == "failed" and len(d["attempts"]) == schedule.MAX_ATTEMPTS
    assert 24 * 3600 < total < 32 * 3600  # about 28 h, with jitter


def test_410_disables_the_url_until_a_manual_redelivery_succeeds(store, box, receiver):
    receiver.script = [410]
    receiver.start()
    now = 1_800_000_000.0
    first = queue(store, receiver.url, now)
    assert wd.deliver(store, box, first, allow_loopback=True, now=now)["status"] == "disabled"
    second = queue(store, receiver.url, now + 1)
    assert wd.deliver(store, box, second, allow_loopback=True, now=now + 1)["status"] == "disabled"
    assert len(receiver.requests) == 1  # the disabled URL was not contacted again
    owner = Principal(tenant="acme", role="member", key_id="k")
    wd.redeliver(store, owner, "ftjob-abc", second, now=now + 2)
    assert wd.deliver(store, box, second, allow_loopback=True, now=now + 2)["status"] == "delivered"
    third = queue(store, receiver.url, now + 3)
    assert wd.deliver(store, box, third, allow_loopback=True, now=now + 3)["status"] == "delivered"
    stranger = Principal(tenant="other", role="member", key_id="k2")
    with pytest.raises(Exception) as err:
        wd.redeliver(store, stranger, "ftjob-abc", second)
    assert getattr(err.value, "status", None) == 404


def test_rotation_signs_with_both_secrets_during_overlap(store, box, receiver):
    receiver.start()
    old = wd.get_secret(store, box, "acme")["secret"]
    new = wd.rotate_secret(store, box, "acme")["secret"]
    assert old != new
    import time

    delivery_id = queue(store, receiver.url, time.time())
    wd.deliver(store, box, delivery_id, allow_loopback=True)
    headers, body = receiver.requests[0]
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(body, headers)


def test_loopback_refused_without_the_setting(store, box, receiver):
    receiver.start()
    delivery_id = queue(store, receiver.url, 1_800_000_000.0)
    d = wd.deliver(store, box, delivery_id, allow_loopback=False, now=1_800_000_000.0)
    assert d["status"] == "retrying" and "refused" in d["attempts"][0]["error"]
    assert receiver.requests == []
    assert json.loads(store.r.get(keys.webhook_delivery(delivery_id)))["url"] == receiver.url
