"""Files API over the Flask test client against a real Redis."""

from __future__ import annotations

import io
from pathlib import Path

from service.core.tasknames import PREPARE_FILE


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(
    client,
    token,
    data: bytes = b'{"prompt": "a", "completion": "b"}\n',
    purpose="fine-tune",
    filename="train.jsonl",
    headers=None,
):
    return client.post(
        "/v1/files",
        headers={**auth(token), **(headers or {})},
        data={"purpose": purpose, "file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def leftover_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file()] if data_dir.exists() else []


def test_upload_retrieve_list_content_delete(client, make_key, settings, dispatcher):
    token = make_key()
    body = '{"prompt": "你好", "completion": "世界"}\n'.encode()
    r = upload(client, token, body)
    assert r.status_code == 200, r.json
    f = r.json
    assert f["id"].startswith("file-") and f["object"] == "file" and f["bytes"] == len(body)
    assert f["status"] == "uploaded" and f["purpose"] == "fine-tune" and f["filename"] == "train.jsonl"
    import hashlib

    assert f["sha256"] == hashlib.sha256(body).hexdigest()
    assert dispatcher.sent == [(PREPARE_FILE, (f["id"],))]

    assert client.get(f"/v1/files/{f['id']}", headers=auth(token)).json == f
    listing = client.get("/v1/files", headers=auth(token)).json
    assert listing["object"] == "list" and [x["id"] for x in listing["data"]] == [f["id"]]
    assert listing["has_more"] is False
    content = client.get(f"/v1/files/{f['id']}/content", headers=auth(token))
    assert content.status_code == 200 and content.data == body

    d = client.delete(f"/v1/files/{f['id']}", headers=auth(token))
    assert d.json == {"id": f["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{f['id']}", headers=auth(token)).status_code == 404
    assert leftover_files(settings.data_dir) == []


def test_cursor_pagination(client, make_key):
    token = make_key()
    made = [upload(client, token, f'{{"n": {i}}}\n'.encode()).json["id"] for i in range(5)]
    page1 = client.get("/v1/files?limit=2", headers=auth(token)).json
    assert [x["id"] for x in page1["data"]] == made[::-1][:2] and page1["has_more"] is True
    page2 = client.get(f"/v1/files?limit=2&after={page1['last_id']}", headers=auth(token)).json
    assert [x["id"] for x in page2["data"]] == made[::-1][2:4] and page2["has_more"] is True
    page3 = client.get(f"/v1/files?limit=2&after={page2['last_id']}", headers=auth(token)).json
    assert [x["id"] for x in page3["data"]] == made[::-1][4:] and page3["has_more"] is False


def assert_error(r, status, type_, param=None, code=None):
    assert r.status_code == status, r.data
    err = r.json["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == type_
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code


def test_bad_uploads_are_clear_4xx_and_leave_nothing(client, make_key, settings):
    token = make_key()
    assert_error(
        upload(client, token, purpose="assistants"),
        400,
        "invalid_request_error",
        "purpose",
        "invalid_purpose",
    )
    assert_error(upload(client, token, data=b""), 400, "invalid_request_error", "file", "empty_file")
    assert_error(
        client.post(
            "/v1/files",
            headers=auth(token),
            data={"purpose": "fine-tune"},
            content_type="multipart/form-data",
        ),
        400,
        "invalid_request_error",
        "file",
    )
    assert_error(
        client.post("/v1/files", headers=auth(token), json={"purpose": "fine-tune"}),
        400,
        "invalid_request_error",
        "file",
    )
    too_big = b"x" * (settings.max_upload_bytes + 10)
    assert_error(upload(client, token, data=too_big), 413, "invalid_request_error", code="file_too_large")
    assert leftover_files(settings.data_dir) == []
    assert client.get("/v1/files", headers=auth(token)).json["data"] == []


def test_auth_errors(client, make_key, store):
    assert_error(client.get("/v1/files"), 401, "authentication_error", code="missing_api_key")
    assert_error(client.get("/v1/files", headers=auth("tl-nope-nope")), 401, "authentication_error")
    assert_error(client.get("/v1/files", headers={"Authorization": "Basic abc"}), 401, "authentication_error")
    from service.core import auth as core_auth

    record, token = core_auth.create_key(store, "acme")
    assert client.get("/v1/files", headers=auth(token)).status_code == 200
    core_auth.revoke_key(store, record.id)
    assert_error(client.get("/v1/files", headers=auth(token)), 401, "authentication_error")
    # A right key id with a wrong secret is refused too.
    assert_error(client.get("/v1/files", headers=auth(token[:-3] + "xyz")), 401, "authentication_error")


def test_idempotency_key(client, make_key):
    token = make_key()
    first = upload(client, token, headers={"Idempotency-Key": "k1"})
    again = upload(client, token, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/files", headers=auth(token)).json["data"]) == 1
    other = upload(client, token, data=b'{"different": 1}\n', headers={"Idempotency-Key": "k1"})
    assert_error(other, 422, "invalid_request_error", "Idempotency-Key", "idempotency_key_reused")
    # Keys are scoped per tenant: another tenant's same key is independent.
    assert upload(client, make_key(), headers={"Idempotency-Key": "k1"}).json["id"] != first.json["id"]


def test_unknown_route_and_method(client, make_key):
    token = make_key()
    assert_error(client.get("/v1/nothing", headers=auth(token)), 404, "not_found_error")
    r = client.put("/v1/files", headers=auth(token))
    assert r.status_code == 405 and "Allow" in r.headers
    assert_error(client.get("/v1/files?limit=0", headers=auth(token)), 400, "invalid_request_error", "limit")
    assert_error(
        client.get("/v1/files?limit=abc", headers=auth(token)), 400, "invalid_request_error", "limit"
    )


def test_expires_after_is_accepted_as_the_sdk_sends_it(client, make_key):
    """The SDK flattens ``expires_after`` into ``expires_after[anchor]`` / ``[seconds]`` form fields."""
    token = make_key()
    r = client.post(
        "/v1/files",
        headers=auth(token),
        data={
            "purpose": "fine-tune",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
            "file": (io.BytesIO(b'{"prompt": "a", "completion": "b"}\n'), "train.jsonl"),
        },
        content_type="multipart/form-data",
    )
    assert r.status_code == 200, r.json
    bad = client.post(
        "/v1/files",
        headers=auth(token),
        data={
            "purpose": "fine-tune",
            "expires_after[seconds]": "12",
            "file": (io.BytesIO(b'{"prompt": "a", "completion": "b"}\n'), "train.jsonl"),
        },
        content_type="multipart/form-data",
    )
    assert bad.status_code == 400
    assert bad.json["error"]["param"] == "expires_after[seconds]"
