"""``GET /v1/files/{id}/content?prepared_for=MODEL``: the file as prepared to train that model."""

from __future__ import annotations

import json

from service.core.preparation import prepare_uploaded_file
from tests.api.test_files import assert_error, auth, upload

ROWS = [{"prompt": f"什么是基金{i}？", "completion": f"集合投资{i}。"} for i in range(12)]
RAW = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*ROWS, ROWS[0]]).encode()  # one duplicate


def test_prepared_content_is_converted_deduplicated_and_tenant_scoped(client, store, settings, make_key):
    token, other = make_key(), make_key()
    f = upload(client, token, RAW, filename="qa.jsonl").json
    prepare_uploaded_file(store, settings.data_dir, f["id"])
    url = f"/v1/files/{f['id']}/content"

    assert client.get(url, headers=auth(token)).data == RAW  # the upload itself is unchanged
    r = client.get(url + "?prepared_for=gpt-4o-mini-2024-07-18", headers=auth(token))
    assert r.status_code == 200, r.data
    assert "qa.prepared.jsonl" in r.headers["Content-Disposition"]
    lines = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert len(lines) == len(ROWS)  # the duplicate is dropped
    assert lines[0]["messages"][-1] == {
        "role": "assistant",
        "content": "集合投资0。",
    }  # chat model: converted
    assert "\\u" not in r.get_data(as_text=True)  # UTF-8, never escaped
    again = client.get(url + "?prepared_for=gpt-4o-mini-2024-07-18", headers=auth(token))
    assert again.data == r.data  # served from the kept copy

    assert_error(
        client.get(url + "?prepared_for=gpt-4o-mini-2024-07-18", headers=auth(other)), 404, "not_found_error"
    )
    assert_error(
        client.get(url + "?prepared_for=gpt-9-ultra", headers=auth(token)),
        400,
        "invalid_request_error",
        "prepared_for",
        "model_not_found",
    )
    pending = upload(client, token, RAW).json
    assert_error(
        client.get(
            f"/v1/files/{pending['id']}/content?prepared_for=gpt-4o-mini-2024-07-18", headers=auth(token)
        ),
        422,
        "invalid_request_error",
        code="file_not_ready",
    )
    assert client.delete(f"/v1/files/{f['id']}", headers=auth(token)).status_code == 200
    assert not (settings.data_dir / "prepared" / f["id"]).exists()
