"""Every bad input in the bad-input corpus (tests/data/bad): a clear report through the API, never a 500."""

from __future__ import annotations

import io

import pytest

from service.core import preparation
from tests.conftest import SAMPLE_DATA

BAD_FILES = sorted(p.name for p in (SAMPLE_DATA / "bad").iterdir())


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.with_overrides(max_upload_bytes=64 * 1024 * 1024)  # huge_line.jsonl is several MB


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_corpus_file_gets_a_line_numbered_report(client, make_key, store, settings, name):
    token = make_key()
    data = (SAMPLE_DATA / "bad" / name).read_bytes()
    r = client.post(
        "/v1/files",
        headers=auth(token),
        content_type="multipart/form-data",
        data={"purpose": "fine-tune", "file": (io.BytesIO(data), name)},
    )
    if not data:
        assert r.status_code == 400 and r.json["error"]["code"] == "empty_file"
        return
    assert r.status_code == 200, r.json
    file_id = r.json["id"]
    assert client.get(f"/v1/files/{file_id}/report", headers=auth(token)).status_code == 409
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # what the worker runs
    report = client.get(f"/v1/files/{file_id}/report", headers=auth(token))
    assert report.status_code == 200, report.json
    body = report.json
    assert body["file_id"] == file_id and body["findings"], name
    for finding in body["findings"]:
        assert {"code", "severity", "message"} <= set(finding)
        assert (
            finding["line"] is not None
            or finding.get("index") is not None
            or finding["code"]
            in (
                "too_few_examples",
                "few_examples",
                "unsupported_encoding",
                "mixed_format",
                "empty_file",
                "binary_content",
                "converted_encoding",
            )
            or finding["severity"] == "info"
        ), finding
    meta = client.get(f"/v1/files/{file_id}", headers=auth(token)).json
    assert meta["status"] == body["status"]
    if meta["status"] == "error":
        assert meta["status_details"]


def test_report_of_another_tenant_is_404(client, make_key, store, settings):
    owner, stranger = make_key(), make_key()
    r = client.post(
        "/v1/files",
        headers=auth(owner),
        content_type="multipart/form-data",
        data={"purpose": "fine-tune", "file": (io.BytesIO(b'{"prompt":"a","completion":"b"}\n'), "a")},
    )
    preparation.prepare_uploaded_file(store, settings.data_dir, r.json["id"])
    assert client.get(f"/v1/files/{r.json['id']}/report", headers=auth(stranger)).status_code == 404
    assert client.get(f"/v1/files/{r.json['id']}/report", headers=auth(owner)).status_code == 200
