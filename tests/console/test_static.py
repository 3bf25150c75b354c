"""The console's static page: served without a key, strict headers, offline assets, no API spec entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "service" / "console" / "static"
CONSOLE = STATIC.parent


def test_page_is_public_with_a_strict_policy(client):
    assert client.get("/console").status_code == 308
    page = client.get("/console/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["Referrer-Policy"] == "no-referrer"
    html = page.get_data(as_text=True)
    assert '<meta charset="utf-8">' in html and '<main id="main"' in html
    script = client.get("/console/js/app.js")
    assert script.status_code == 200 and "javascript" in script.mimetype


def test_unknown_asset_is_a_404_envelope_and_data_routes_still_need_a_key(client):
    missing = client.get("/console/js/nope.js")
    assert missing.status_code == 404 and missing.get_json()["error"]["type"] == "not_found_error"
    assert client.get("/console/../v1/files").status_code in (401, 404)
    assert client.get("/v1/fine_tuning/jobs").status_code == 401


def test_console_is_not_in_the_api_spec(client):
    spec = client.get("/openapi.json").get_json()
    assert not [p for p in spec["paths"] if p.startswith("/console")]


def test_assets_load_nothing_from_the_internet():
    """Only same-origin relative URLs in our own files; the vendored library is what package-lock pins."""
    own = [p for p in STATIC.rglob("*") if p.is_file() and "vendor" not in p.parts]
    assert own
    for path in own:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
        assert not re.search(r"""(import|from)\s*\(?\s*["'](https?:)?//""", text), path
        assert "innerHTML" not in text, path  # text goes in through textContent only
    lock = json.loads((CONSOLE / "package-lock.json").read_text())
    vendored = json.loads((STATIC / "vendor" / "manifest.json").read_text())
    for name, meta in vendored.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == meta["version"], name
    assert (STATIC / "vendor" / "uplot" / "uPlot.esm.js").stat().st_size > 10_000
