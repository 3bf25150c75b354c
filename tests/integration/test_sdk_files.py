"""The official openai SDK as a client of a real Tuneline server (gunicorn + Redis + worker)."""

from __future__ import annotations

import io

import httpx2
import openai
import pytest
from openai import OpenAI

from tests.support.procs import wait_until

pytestmark = pytest.mark.slow


def sdk(stack, token: str) -> OpenAI:
    return OpenAI(base_url=stack.base_url + "/v1", api_key=token, max_retries=0, timeout=20)


def test_files_roundtrip_with_official_sdk(stack, sample_data):
    client = sdk(stack, stack.key())
    path = sample_data / "funds_qa.jsonl"
    with path.open("rb") as fh:
        created = client.files.create(file=fh, purpose="fine-tune")
    assert created.id.startswith("file-") and created.bytes == path.stat().st_size
    assert created.purpose == "fine-tune"

    listed = client.files.list()
    assert [f.id for f in listed.data] == [created.id]
    assert client.files.retrieve(created.id).filename == "funds_qa.jsonl"
    assert client.files.content(created.id).content == path.read_bytes()

    # The worker prepares the upload asynchronously; the file leaves "uploaded".
    final = wait_until(
        lambda: (f := client.files.retrieve(created.id)).status != "uploaded" and f,
        30,
        what="file preparation",
    )
    assert final.status in ("processed", "error")

    deleted = client.files.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(created.id)
    assert err.value.body["type"] == "not_found_error"  # type: ignore[index]


def test_sdk_sees_auth_and_validation_errors(stack):
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, "tl-bogus-bogus").files.list()
    client = sdk(stack, stack.key())
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("x.jsonl", io.BytesIO(b"")), purpose="fine-tune")
    assert err.value.code == "empty_file"


def test_deeply_nested_upload_ends_with_a_report_through_the_worker(stack, sample_data):
    """The real worker prepares a file with a 100,000-level nested line: the file ends `error`
    with a line-numbered report, never a crash and a report route that says "retry" forever."""
    token = stack.key()
    client = sdk(stack, token)
    with (sample_data / "bad" / "deep_nesting.jsonl").open("rb") as fh:
        created = client.files.create(file=fh, purpose="fine-tune")
    final = wait_until(
        lambda: (f := client.files.retrieve(created.id)).status != "uploaded" and f,
        30,
        what="file preparation",
    )
    assert final.status == "error" and "too_deep" in (final.status_details or "")
    r = httpx2.get(
        f"{stack.base_url}/v1/files/{created.id}/report",
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert r.status_code == 200, r.text
    deep = [f for f in r.json()["findings"] if f["code"] == "too_deep"]
    assert [(f["line"], f["field"]) for f in deep] == [(5, "completion"), (9, "meta")]


def test_the_server_keeps_an_idle_connection_longer_than_the_sdk_does(stack):
    """The SDK's HTTP client keeps an idle connection 5 s and then reuses it. The server must not
    close it first: a request sent just as the server closed its end failed with "Server
    disconnected without sending a response" (gunicorn's default keep-alive is 2 s)."""
    import http.client
    import time

    from service import gunicorn_conf

    expiry = httpx2.Limits().keepalive_expiry
    assert expiry is not None and gunicorn_conf.keepalive > expiry
    conn = http.client.HTTPConnection(stack.base_url.removeprefix("http://"), timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", "/healthz")  # the second one on the same socket, 3 s later
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b'{"status":"ok"}\n')
            time.sleep(3)  # idle past gunicorn's default, within the SDK's expiry
    finally:
        conn.close()
