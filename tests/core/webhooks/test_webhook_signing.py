"""Tuneline's signatures are judged by the openai SDK and the standardwebhooks library."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping

import openai
import pytest
import standardwebhooks

from service.core.webhooks.signing import (
    DEFAULT_EVENTS,
    EVENT_TYPES,
    event_payload,
    is_valid_secret,
    new_secret,
    sign,
)

JOB = {
    "id": "ftjob-abc123",
    "object": "fine_tuning.job",
    "status": "succeeded",
    "model": "gpt-4o-mini-2024-07-18",
    "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:acme::ftjob-abc123",
    "suffix": "投资问答",
    "metadata": {"team": "研究"},
}


def verify_openai(body: bytes, headers: Mapping[str, str], secret: str) -> object:
    client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:1")
    return client.webhooks.unwrap(body, dict(headers), secret=secret)


def verify_standard(body: bytes, headers: Mapping[str, str], secret: str) -> object:
    return standardwebhooks.Webhook(secret).verify(body, dict(headers))


VERIFIERS: dict[str, tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]]] = {
    "openai": (verify_openai, openai.InvalidWebhookSignatureError),
    "standardwebhooks": (verify_standard, standardwebhooks.WebhookVerificationError),
}


@pytest.fixture(params=sorted(VERIFIERS))
def verifier(
    request: pytest.FixtureRequest,
) -> tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]]:
    return VERIFIERS[request.param]


def payload() -> bytes:
    return event_payload("evt_01", "fine_tuning.job.succeeded", 1_767_225_600, JOB)


def test_secret_shape() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) == 32
    assert is_valid_secret(secret)
    assert new_secret() != secret
    assert not is_valid_secret("whsec_not base64!")
    assert not is_valid_secret("sk_" + secret[6:])


def test_event_types() -> None:
    assert set(DEFAULT_EVENTS) == {
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
        "fine_tuning.job.cancelled",
    }
    assert set(DEFAULT_EVENTS) < set(EVENT_TYPES)
    assert {"fine_tuning.job.running", "fine_tuning.job.checkpoint", "fine_tuning.job.evaluated"} < set(
        EVENT_TYPES
    )


def test_payload_is_compact_utf8_and_deterministic() -> None:
    body = payload()
    assert body == payload()
    assert "投资问答".encode() in body  # never \\uXXXX-escaped
    assert b"\\u" not in body and b": " not in body
    assert json.loads(body) == {
        "id": "evt_01",
        "object": "event",
        "type": "fine_tuning.job.succeeded",
        "created_at": 1_767_225_600,
        "data": JOB,
    }
    assert list(json.loads(body)) == ["id", "object", "type", "created_at", "data"]


def test_payload_refuses_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown webhook event type"):
        event_payload("evt_01", "job.done", 0, JOB)


def test_headers_are_standard_webhooks() -> None:
    secret = new_secret()
    headers = sign([secret], "msg_1", 1_767_225_600, payload())
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1767225600"
    version, sig = headers["webhook-signature"].split(",")
    assert version == "v1" and len(base64.b64decode(sig)) == 32
    with pytest.raises(ValueError):
        sign([], "msg_1", 0, payload())


def test_both_verifiers_accept(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
) -> None:
    verify, _ = verifier
    secret = new_secret()
    body = payload()
    headers = sign([secret], "msg_1", int(time.time()), body)
    event = verify(body, headers, secret)
    if isinstance(event, dict):
        assert event["data"]["id"] == "ftjob-abc123"
    else:
        assert event.type == "fine_tuning.job.succeeded"  # type: ignore[attr-defined]
        assert event.data.id == "ftjob-abc123"  # type: ignore[attr-defined]


def test_openai_unwrap_returns_typed_event() -> None:
    secret = new_secret()
    body = payload()
    event = verify_openai(body, sign([secret], "msg_1", int(time.time()), body), secret)
    assert type(event).__name__ == "FineTuningJobSucceededWebhookEvent"


def test_tampered_body_is_rejected(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
) -> None:
    verify, error = verifier
    secret = new_secret()
    body = payload()
    headers = sign([secret], "msg_1", int(time.time()), body)
    tampered = body.replace(b'"succeeded"', b'"failed"')
    assert tampered != body
    with pytest.raises(error):
        verify(tampered, headers, secret)


def test_tampered_id_is_rejected(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
) -> None:
    verify, error = verifier
    secret = new_secret()
    body = payload()
    headers = {**sign([secret], "msg_1", int(time.time()), body), "webhook-id": "msg_2"}
    with pytest.raises(error):
        verify(body, headers, secret)


@pytest.mark.parametrize("age_s", [301, 600, 3600])
def test_stale_timestamp_is_rejected(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
    age_s: int,
) -> None:
    verify, error = verifier
    secret = new_secret()
    body = payload()
    headers = sign([secret], "msg_1", int(time.time()) - age_s, body)
    with pytest.raises(error):
        verify(body, headers, secret)


def test_future_timestamp_is_rejected(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
) -> None:
    verify, error = verifier
    secret = new_secret()
    body = payload()
    headers = sign([secret], "msg_1", int(time.time()) + 600, body)
    with pytest.raises(error):
        verify(body, headers, secret)


def test_wrong_secret_is_rejected(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
) -> None:
    verify, error = verifier
    body = payload()
    headers = sign([new_secret()], "msg_1", int(time.time()), body)
    with pytest.raises(error):
        verify(body, headers, new_secret())


def test_rotation_overlap_verifies_with_either_secret(
    verifier: tuple[Callable[[bytes, Mapping[str, str], str], object], type[Exception]],
) -> None:
    verify, error = verifier
    old, new = new_secret(), new_secret()
    body = payload()
    headers = sign([new, old], "msg_1", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(body, headers, new)
    verify(body, headers, old)
    with pytest.raises(error):
        verify(body, headers, new_secret())


def test_each_attempt_is_signed_at_send_time() -> None:
    """Same id and body, new timestamp: the signature changes, so none can be stored pre-signed."""
    secret = new_secret()
    body = payload()
    first = sign([secret], "msg_1", 1_767_225_600, body)
    later = sign([secret], "msg_1", 1_767_225_605, body)
    assert first["webhook-id"] == later["webhook-id"]
    assert first["webhook-signature"] != later["webhook-signature"]
