"""The baseline for the job GET benchmark: a bare Flask app serving one JSON dict.

``BENCH_BARE_JSON`` names a file holding the body to return (the benchmark writes the exact body
Tuneline returns for the job, so both sides serialise the same-sized dict). No auth, no Redis, no
schema, no request log: what plain Flask under the same gunicorn can do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flask import Flask

app = Flask("bare")
app.json.ensure_ascii = False  # type: ignore[attr-defined]
app.json.sort_keys = False  # type: ignore[attr-defined]

_path = os.environ.get("BENCH_BARE_JSON")
BODY: dict[str, Any] = json.loads(Path(_path).read_text(encoding="utf-8")) if _path else {"id": "x"}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/fine_tuning/jobs/<job_id>")
def job(job_id: str) -> dict[str, Any]:
    return {**BODY, "id": job_id}
