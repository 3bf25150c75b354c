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


def test_a_file_whose_preparation_failed_answers_a_final_error_not_retry(client, make_key, store, settings):
    """A failure of ours (here the stored bytes vanished) ends the file `error`; its report route
    then says so for good (422) instead of "still being prepared; retry shortly" forever."""
    from service.core import files

    token = make_key()
    r = client.post(
        "/v1/files",
        headers=auth(token),
        content_type="multipart/form-data",
        data={"purpose": "fine-tune", "file": (io.BytesIO(b'{"prompt":"a","completion":"b"}\n'), "a.jsonl")},
    )
    file_id = r.json["id"]
    pending = client.get(f"/v1/files/{file_id}/report", headers=auth(token))
    assert pending.status_code == 409 and pending.json["error"]["code"] == "report_not_ready"
    files.blob_path(settings.data_dir, file_id).unlink()
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)  # what the worker runs
    meta = client.get(f"/v1/files/{file_id}", headers=auth(token)).json
    assert meta["status"] == "error" and "internal error" in meta["status_details"]
    report = client.get(f"/v1/files/{file_id}/report", headers=auth(token))
    assert report.status_code == 422, report.json
    assert report.json["error"]["code"] == "report_unavailable"
    assert report.json["error"]["type"] == "invalid_request_error"
    assert "internal error" in report.json["error"]["message"]


@pytest.mark.parametrize("name", ["deep_nesting.jsonl", "deep_array.json"])
def test_deeply_nested_file_ends_with_a_report(client, make_key, store, settings, name):
    token = make_key()
    data = (SAMPLE_DATA / "bad" / name).read_bytes()
    r = client.post(
        "/v1/files",
        headers=auth(token),
        content_type="multipart/form-data",
        data={"purpose": "fine-tune", "file": (io.BytesIO(data), name)},
    )
    file_id = r.json["id"]
    preparation.prepare_uploaded_file(store, settings.data_dir, file_id)
    report = client.get(f"/v1/files/{file_id}/report", headers=auth(token))
    assert report.status_code == 200, report.json
    deep = [f for f in report.json["findings"] if f["code"] == "too_deep"]
    assert deep and deep[0]["line"] == 5 and deep[0]["field"] == "completion"
    meta = client.get(f"/v1/files/{file_id}", headers=auth(token)).json
    assert meta["status"] == "error" and "too_deep" in meta["status_details"]
