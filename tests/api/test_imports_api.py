"""The Imports routes over the Flask test client: validation, the sealed key, isolation, lists."""

from __future__ import annotations

from service.core.store import imports as repo
from service.core.store import keys
from service.core.tasknames import IMPORT_RUN
from tests.api.test_files import assert_error, auth

KEY = "sk-account-key-0123456789abcdef"


def post(client, token, body, **headers):
    return client.post("/v1/imports", headers={**auth(token), **headers}, json=body)


def sandbox_url(settings) -> str:
    return settings.effective_sandbox_url


def test_create_seals_the_key_and_the_task_gets_the_id_only(client, make_key, store, settings, dispatcher):
    token = make_key("acme")
    r = post(
        client,
        token,
        {"source": "openai", "api_key": KEY, "base_url": sandbox_url(settings), "since": "2025-01-01"},
    )
    assert r.status_code == 202, r.data
    body = r.json
    assert body["id"].startswith("imp-") and body["object"] == "import" and body["status"] == "queued"
    assert body["since"] == 1735689600 and body["source"] == "openai"
    assert set(body["progress"]) == {
        "jobs_seen",
        "jobs_imported",
        "jobs_already_imported",
        "jobs_skipped",
        "files_imported",
        "files_reused",
    }
    assert KEY not in r.get_data(as_text=True) and "api_key" not in body
    assert dispatcher.sent == [(IMPORT_RUN, (body["id"],))]
    sealed = repo.sealed_key(store, body["id"])
    assert sealed and KEY not in sealed
    assert client.application.extensions["tuneline"].box.decrypt(sealed) == KEY
    for key in store.r.scan_iter():
        if store.r.type(key) == "string":
            assert KEY not in store.r.get(key), key
    assert store.r.ttl(keys.import_secret(body["id"])) > 0

    got = client.get(f"/v1/imports/{body['id']}", headers=auth(token))
    assert got.status_code == 200 and got.json == body
    listed = client.get("/v1/imports", headers=auth(token)).json
    assert [d["id"] for d in listed["data"]] == [body["id"]] and listed["has_more"] is False


def test_another_tenant_sees_nothing(client, make_key, settings):
    mine = post(
        client, make_key("acme"), {"source": "openai", "api_key": KEY, "base_url": sandbox_url(settings)}
    )
    other = make_key("beta")
    assert_error(
        client.get(f"/v1/imports/{mine.json['id']}", headers=auth(other)),
        404,
        "not_found_error",
        code="import_not_found",
    )
    assert client.get("/v1/imports", headers=auth(other)).json["data"] == []


def test_bad_input_names_the_field(client, make_key):
    token = make_key("acme")
    assert_error(post(client, token, {"source": "gcp"}), 400, "invalid_request_error", param="source")
    assert_error(
        post(client, token, {"source": "openai", "since": "yesterday"}),
        400,
        "invalid_request_error",
        param="since",
    )
    assert_error(
        post(client, token, {"source": "openai", "jobs": []}), 400, "invalid_request_error", param="jobs"
    )
    assert_error(
        post(client, token, {"source": "openai", "extra": 1}), 400, "invalid_request_error", param="extra"
    )


def test_a_base_url_gets_the_ssrf_guard(client, make_key):
    token = make_key("acme")
    for url in (
        "http://169.254.169.254/v1",
        "http://10.0.0.8/v1",
        "file:///etc/passwd",
        "http://user@api.example.com/v1",
    ):
        r = post(client, token, {"source": "openai", "api_key": KEY, "base_url": url})
        assert_error(r, 422, "invalid_request_error", param="base_url", code="unsafe_base_url")


def test_the_configured_key_never_goes_to_a_callers_url(client, make_key):
    token = make_key("acme")
    # No key configured: the default credentials are refused as not configured.
    assert_error(
        post(client, token, {"source": "openai"}),
        422,
        "invalid_request_error",
        code="provider_not_configured",
    )
    r = post(client, token, {"source": "openai", "base_url": "https://93.184.216.34/v1"})
    assert_error(r, 422, "invalid_request_error", param="api_key", code="api_key_required")
    r = post(client, token, {"source": "azure", "api_key": KEY})
    assert_error(r, 422, "invalid_request_error", param="base_url", code="base_url_required")


def test_idempotency_key_replays_the_first_answer(client, make_key, settings, dispatcher):
    token = make_key("acme")
    body = {"source": "openai", "api_key": KEY, "base_url": sandbox_url(settings)}
    first = post(client, token, body, **{"Idempotency-Key": "k1"})
    again = post(client, token, body, **{"Idempotency-Key": "k1"})
    assert again.status_code == 202 and again.json["id"] == first.json["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(dispatcher.sent) == 1
    changed = post(client, token, {**body, "since": 5}, **{"Idempotency-Key": "k1"})
    assert_error(changed, 422, "invalid_request_error", code="idempotency_key_reused")
