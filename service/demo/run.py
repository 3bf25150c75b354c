"""The ``make run`` demo: upload a sample dataset, run a sandbox job, receive its signed webhook."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import standardwebhooks
from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob

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


class _Receiver:
    """A local webhook receiver that verifies each delivery with the standardwebhooks library."""

    def __init__(self, secret: str) -> None:
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    event = standardwebhooks.Webhook(secret).verify(body, dict(self.headers.items()))
                    print(f"demo: webhook {event['type']} verified (webhook-id {self.headers['webhook-id']})")
                    self.send_response(200)
                    receiver.got.set()
                except standardwebhooks.WebhookVerificationError:
                    print("demo: webhook signature did NOT verify")
                    self.send_response(400)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def follow_job(client: OpenAI, job_id: str, label: str, timeout_s: float) -> FineTuningJob:
    """Print a job's events as they come until it ends (or ``timeout_s``); return the job."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        for event in reversed(client.fine_tuning.jobs.list_events(job_id, limit=50).data):
            if event.id not in seen:
                seen.add(event.id)
                print(f"{label}:   [{event.level}] {event.message}")
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(1)


def run_demo(base: str, token: str, settings: Settings) -> None:
    _wait_ready(base)
    client = OpenAI(base_url=base + "/v1", api_key=token, max_retries=2)
    with SAMPLE.open("rb") as fh:
        uploaded = client.files.create(file=fh, purpose="fine-tune")
    print(f"demo: uploaded {uploaded.id} ({uploaded.bytes} bytes)")
    for _ in range(120):
        f = client.files.retrieve(uploaded.id)
        if f.status != "uploaded":
            break
        time.sleep(0.5)
    print(f"demo: file {f.id} is {f.status} {f.status_details or ''}".rstrip())
    if f.status != "processed":
        return
    secret = httpx2.get(
        base + "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()["secret"]
    receiver = _Receiver(secret)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=f.id,
        suffix="demo",
        extra_body={"provider": settings.provider_default, "webhook": {"url": receiver.url}},
    )
    print(f"demo: created {job.id} on provider {settings.provider_default}; following its events")
    job = follow_job(client, job.id, "demo", 300)
    print(f"demo: job {job.id} {job.status}; fine-tuned model {job.fine_tuned_model}")
    if job.status == "succeeded":
        _print_metrics(base, token, job.id)
    if receiver.got.wait(30):
        print("demo: webhook received")
    receiver.server.shutdown()
    _print_next_steps(base, job.id, settings.metrics_enabled)


def _print_metrics(base: str, token: str, job_id: str, shown: int = 8) -> None:
    """A short table of the job's per-step metrics (evenly spaced rows, always the last)."""
    rows = httpx2.get(
        f"{base}/v1/fine_tuning/jobs/{job_id}/metrics",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()["data"]
    if not rows:
        print("demo: no metrics recorded")
        return
    picked = sorted({round(i * (len(rows) - 1) / max(shown - 1, 1)) for i in range(shown)})
    print(f"demo: metrics ({len(rows)} steps)")
    print(f"demo:   {'step':>5}  {'train_loss':>10}  {'valid_loss':>10}  {'token_acc':>9}")
    for row in (rows[i] for i in picked):
        train, valid = _cell(row.get("train_loss"), 10), _cell(row.get("valid_loss"), 10)
        print(f"demo:   {row['step']:>5}  {train}  {valid}  {_cell(row.get('train_mean_token_accuracy'), 9)}")


def _cell(value: object, width: int) -> str:
    return f"{value:>{width}.4f}" if isinstance(value, (int, float)) else "-".rjust(width)


def _print_next_steps(base: str, job_id: str, metrics_enabled: bool) -> None:
    job_url = f"{base}/v1/fine_tuning/jobs/{job_id}"
    print("demo: where to look next (send the API key as 'Authorization: Bearer <key>'):")
    print(f"demo:   events       {job_url}/events   (live: ?stream=true)")
    print(f"demo:   metrics CSV  {job_url}/metrics?format=csv")
    print(f"demo:   loss curve   {job_url}/metrics?format=png")
    print(f"demo:   stats        {base}/v1/stats")
    if metrics_enabled:
        print(f"demo:   prometheus   {base}/metrics   (no key, or an ops key)")
    print(
        f"demo:   CLI          TUNELINE_BASE_URL={base} TUNELINE_API_KEY=<key> tuneline jobs follow {job_id}"
    )
    print("demo: done")
