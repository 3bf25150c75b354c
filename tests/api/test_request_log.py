"""What every request leaves behind: the X-Request-Id header, one JSON request log line, the counter."""

from __future__ import annotations

import json
import logging

from service.api.ops import prometheus
from service.core.jobs.views import public_job
from service.core.store import jobs as repo
from service.logs import JsonFormatter
from tests.api.test_files import auth
from tests.bench.job_get import job_record

FIELDS = ["request_id", "method", "path", "status", "ms", "tenant"]


def request_lines(caplog) -> list[dict]:  # type: ignore[no-untyped-def]
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(r))
        for r in caplog.records
        if r.name == "tuneline.http" and r.getMessage() == "request"
    ]


def test_each_request_logs_one_line_with_its_id_and_tenant(app, client, make_key, store, caplog):
    caplog.set_level(logging.INFO, logger="tuneline.http")
    token = make_key("acme")
    job = job_record("acme")
    repo.insert(store, job, job["created_at"] * 1000)
    url = f"/v1/fine_tuning/jobs/{job['id']}"

    ok = client.get(url, headers={**auth(token), "X-Request-Id": "req-given"})
    health = client.get("/healthz")
    refused = client.get(url)
    missing = client.get("/v1/fine_tuning/jobs/ftjob-none", headers=auth(token))

    assert ok.headers["X-Request-Id"] == "req-given"
    for response in (health, refused, missing):  # a refused request has its id too
        assert len(response.headers["X-Request-Id"]) == 32  # a fresh uuid4, hex
    lines = request_lines(caplog)
    assert [list(line)[:4] for line in lines] == [["ts", "level", "logger", "msg"]] * 4
    assert [list(line)[4:] for line in lines] == [FIELDS] * 4
    assert [(li["request_id"], li["method"], li["path"], li["status"], li["tenant"]) for li in lines] == [
        ("req-given", "GET", url, 200, "acme"),
        (health.headers["X-Request-Id"], "GET", "/healthz", 200, None),
        (refused.headers["X-Request-Id"], "GET", url, 401, None),
        (missing.headers["X-Request-Id"], "GET", "/v1/fine_tuning/jobs/ftjob-none", 404, "acme"),
    ]
    assert all(li["level"] == "info" and li["logger"] == "tuneline.http" for li in lines)
    assert all(isinstance(li["ms"], float) and li["ms"] >= 0 for li in lines)

    text = prometheus.exposition(app).decode()
    route = "/v1/fine_tuning/jobs/<string:job_id>"
    assert f'tuneline_http_requests_total{{method="GET",route="{route}",status="200"}} 1.0' in text
    assert f'tuneline_http_requests_total{{method="GET",route="{route}",status="401"}} 1.0' in text
    assert f'tuneline_http_requests_total{{method="GET",route="{route}",status="404"}} 1.0' in text
    assert 'tuneline_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text


def test_json_formatter_keeps_extras_in_order_non_ascii_and_unknown_types():
    record = logging.LogRecord("tuneline.x", logging.WARNING, __file__, 1, "héllo %s", ("wörld",), None)
    record.__dict__.update({"job_id": "ftjob-1", "when": object, "_private": 1, "n": 1.5})
    line = JsonFormatter().format(record)
    out = json.loads(line)
    assert list(out) == ["ts", "level", "logger", "msg", "job_id", "when", "n"]
    assert out["msg"] == "héllo wörld" and "héllo wörld" in line  # not \u-escaped
    assert out["when"] == str(object) and out["level"] == "warning"
    assert line.startswith('{"ts": ') and ', "level": "warning", ' in line  # json.dumps' separators


def test_job_get_body_bytes_are_the_sorted_compact_json_of_public_job(client, make_key, store):
    token = make_key("acme")
    job = job_record("acme") | {"suffix": "résumé", "estimate": {"cost_usd": 1e-05, "n": 2}}
    repo.insert(store, job, job["created_at"] * 1000)
    response = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(token))
    stored = repo.load(store, job["id"]) or {}
    expected = json.dumps(public_job(stored), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert response.data.decode() == expected + "\n"
    assert response.headers["Content-Type"] == "application/json"


def test_ensure_sync_remembers_plain_functions_and_still_wraps_coroutines(app, monkeypatch):
    class View:
        def get(self) -> None: ...

    async def coro() -> None: ...

    def plain() -> None: ...

    wrapped = []
    monkeypatch.setattr(app, "async_to_sync", lambda f: wrapped.append(f) or "wrapped")
    for _ in range(2):  # the second time from what it remembered
        assert app.ensure_sync(plain) is plain
        bound = View().get
        assert app.ensure_sync(bound) is bound
        assert app.ensure_sync(coro) == "wrapped"
    assert wrapped == [coro, coro]
