"""Jobs API request parsing over the Flask test client."""

from __future__ import annotations

from tests.api.test_files import assert_error, auth


def test_metadata_filters_reject_nested_keys(client, make_key):
    token = make_key()
    ok = client.get("/v1/fine_tuning/jobs?metadata[team]=a", headers=auth(token))
    assert ok.status_code == 200
    assert_error(
        client.get("/v1/fine_tuning/jobs?metadata[team][x]=a", headers=auth(token)),
        400,
        "invalid_request_error",
        "metadata",
    )
