"""Upload a sample dataset through the official SDK and show its preparation report."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
from openai import OpenAI

from service.settings import Settings

SAMPLE = Path(__file__).with_name("funds_qa_sample.jsonl")


def _wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx2.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the API at {base} did not become ready")


def run_demo(base: str, token: str, settings: Settings) -> None:
    _wait_ready(base)
    client = OpenAI(base_url=base + "/v1", api_key=token, max_retries=2)
    with SAMPLE.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="fine-tune")
    print(f"demo: uploaded {uploaded.id} ({uploaded.bytes} bytes)")
    for _ in range(120):
        f = client.files.retrieve(uploaded.id)
        if f.status != "uploaded":
            print(f"demo: file {f.id} is {f.status} {f.status_details or ''}".rstrip())
            break
        time.sleep(0.5)
