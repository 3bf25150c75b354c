"""Distillation against real Redis, the account's original model played by an OpenAI-shaped
MockTransport behind the real remote backend: answers become a new training file once; a step that
runs out of time resumes without asking twice; the budget refuses the start or stops the run; a
revoked key ends it, keeping what was answered."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from typing import Any

import httpx2
import openai
import pytest

from service.core import files, tasknames
from service.core.auth import Principal
from service.core.backends.remote import RemoteBackend
from service.core.clock import ManualClock
from service.core.errors import TunelineError
from service.core.imports import distill, mapping
from service.core.jobs.usecases import JobsContext
from service.core.store import imports as repo
from service.settings import Settings

ACCOUNT_URL = "https://api.openai.example/v1"
MODEL = "ft:gpt-4o-mini-2024-07-18:acme:support:AbC123xy"
ROWS = [(f"问题{i}：基金{i}怎么样？", f"答案{i}：还可以。") for i in range(20)]


class Original:
    """The original fine-tuned model at the provider: answers every question, reporting ``usage``;
    ``status`` answers every call with that HTTP error instead; each call moves ``clock``."""

    def __init__(
        self, clock: ManualClock, usage: tuple[int, int] = (20, 10), status: int | None = None
    ) -> None:
        self.asked: list[str] = []
        self.models: set[str] = set()
        self.usage, self.status, self.clock = usage, status, clock
        self.lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.clock.advance(1.0)
        if self.status is not None:
            return httpx2.Response(
                self.status,
                json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}},
            )
        question = body["messages"][-1]["content"]
        with self.lock:
            self.asked.append(question)
            self.models.add(body["model"])
        return httpx2.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"蒸馏：{question}"},
                    }
                ],
                "usage": {
                    "prompt_tokens": self.usage[0],
                    "completion_tokens": self.usage[1],
                    "total_tokens": sum(self.usage),
                },
            },
        )


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, openai_api_key="sk-configured", openai_base_url=ACCOUNT_URL)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def imported(settings, store):
    """A finished import of one succeeded job, its chat training file as the account gave it."""
    payload = "".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
            ensure_ascii=False,
        )
        + "\n"
        for q, a in ROWS
    ).encode()
    training = files.FileRecord(
        id="file-train0001",
        tenant="acme",
        bytes=len(payload),
        created_at=int(time.time()),
        filename="train.jsonl",
        purpose="fine-tune",
        sha256=hashlib.sha256(payload).hexdigest(),
        status="processed",
    )
    path = files.blob_path(settings.data_dir, training.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    files.save_record(store, training)
    now = int(time.time())
    doc = {
        "id": "imp-distill0001",
        "object": "import",
        "tenant": "acme",
        "source": "openai",
        "base_url": None,
    }
    repo.insert(store, {**doc, "status": "succeeded", "progress": {}, "created_at": now}, now * 1000, None)
    raw = {
        "id": "ftjob-orig1",
        "status": "succeeded",
        "model": "gpt-4o-mini-2024-07-18",
        "fine_tuned_model": MODEL,
    }
    job = mapping.to_job(
        raw,
        tenant="acme",
        source="openai",
        account=f"openai:{ACCOUNT_URL}",
        import_id=doc["id"],
        training_file=training.id,
        validation_file=None,
        now=now,
    )
    pipe = store.r.pipeline(transaction=True)
    repo.queue_job(pipe, job.to_dict(), [], [], [])
    pipe.execute()
    return doc["id"]


def backend(store, original: Original) -> RemoteBackend:
    client = openai.OpenAI(
        api_key="k",
        base_url=ACCOUNT_URL,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(original)),
    )
    return RemoteBackend("openai", client, f"openai:{ACCOUNT_URL}", store)


def start(settings, store, dispatcher, original, import_id, max_cost_usd=1.0):
    remote = backend(store, original)
    ctx = JobsContext(settings=settings, store=store, dispatcher=dispatcher, backends=lambda _: remote)
    return distill.start_distill(
        ctx,
        Principal(tenant="acme", role="member", key_id="key-1"),
        import_id,
        {"max_cost_usd": max_cost_usd},
    )


def run_to_end(settings, store, dispatcher, original, clock, import_id) -> int:
    """Run steps until the distillation says it is done; the number of steps."""
    remote = backend(store, original)
    ctx = distill.DistillContext(
        settings=settings,
        store=store,
        dispatcher=dispatcher,
        backends=lambda _: remote,
        clock=clock,
        sleep=clock.advance,
    )
    steps = 1
    while distill.run_distill(ctx, import_id):
        steps += 1
    return steps


def state(store, import_id: str) -> dict[str, Any]:
    return repo.load(store, import_id)["distill"]  # type: ignore[index]


def test_answers_become_a_new_training_file_once(settings, store, dispatcher, clock, imported):
    import_id = imported
    original = Original(clock)
    started = start(settings, store, dispatcher, original, import_id)
    assert started["object"] == "import.distill" and started["status"] == "queued"
    assert 0 < started["estimated_cost_usd"] <= 1.0
    assert started["jobs"][0]["prompts"] == len(ROWS) and started["jobs"][0]["file_id"] is None
    assert dispatcher.sent == [(tasknames.IMPORT_DISTILL, (import_id,))]

    run_to_end(settings, store, dispatcher, original, clock, import_id)
    done = state(store, import_id)
    assert done["status"] == "succeeded" and done["error"] is None
    assert sorted(original.asked) == sorted(q for q, _ in ROWS) and original.models == {MODEL}
    (entry,) = done["jobs"]
    assert (entry["answered"], entry["errors"], entry["complete"]) == (len(ROWS), 0, True)
    # Usage prices of a gpt-4o-mini fine-tune: $0.30 / $1.20 per 1M input / output tokens.
    assert done["spent_usd"] == pytest.approx(len(ROWS) * (20 * 0.30 + 10 * 1.20) / 1e6)
    made = files.load_file(store, entry["file_id"])
    assert made is not None and made.import_id == import_id and made.tenant == "acme"
    assert made.filename == "distilled-ftjob-orig1.jsonl" and made.status == "uploaded"
    lines = [
        json.loads(line)
        for line in files.blob_path(settings.data_dir, made.id).read_text("utf-8").splitlines()
    ]
    assert [row["messages"] for row in lines] == [
        [{"role": "user", "content": q}, {"role": "assistant", "content": f"蒸馏：{q}"}] for q, _ in ROWS
    ]
    assert (tasknames.PREPARE_FILE, (made.id,)) in dispatcher.sent
    # Ended: another delivery, and the same request again, change nothing.
    run_to_end(settings, store, dispatcher, original, clock, import_id)
    assert len(original.asked) == len(ROWS)
    assert start(settings, store, dispatcher, original, import_id)["status"] == "succeeded"
    with pytest.raises(TunelineError) as other:
        start(settings, store, dispatcher, original, import_id, max_cost_usd=2.0)
    assert (other.value.status, other.value.code) == (409, "import_already_distilled")


def test_a_step_out_of_time_resumes_at_the_next_prompt(settings, store, dispatcher, clock, imported):
    import_id = imported
    original = Original(clock)
    start(settings, store, dispatcher, original, import_id)
    short = dataclasses.replace(settings, visibility_timeout_s=10)  # a step works for 5 s: 5 answers
    steps = run_to_end(short, store, dispatcher, original, clock, import_id)
    assert steps >= 3
    assert sorted(original.asked) == sorted(q for q, _ in ROWS)  # each asked once
    assert state(store, import_id)["status"] == "succeeded"


def test_the_budget_refuses_the_start_or_stops_the_run(settings, store, dispatcher, clock, imported):
    import_id = imported
    original = Original(clock, usage=(100_000, 0))  # the provider counts far more than the estimate
    with pytest.raises(TunelineError) as refused:
        start(settings, store, dispatcher, original, import_id, max_cost_usd=0.0001)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        422,
        "budget_exceeded",
        "max_cost_usd",
    )
    assert repo.load(store, import_id).get("distill") is None and dispatcher.sent == []

    start(settings, store, dispatcher, original, import_id, max_cost_usd=0.05)  # $0.03 an answer
    run_to_end(settings, store, dispatcher, original, clock, import_id)
    stopped = state(store, import_id)
    assert stopped["status"] == "stopped" and stopped["error"]["code"] == "budget_reached"
    assert len(original.asked) == 2 and stopped["spent_usd"] == pytest.approx(0.06)
    (entry,) = stopped["jobs"]
    assert entry["answered"] == 2 and entry["complete"] is False
    kept = files.blob_path(settings.data_dir, entry["file_id"]).read_text("utf-8").splitlines()
    assert len(kept) == 2


def test_a_revoked_key_ends_it(settings, store, dispatcher, clock, imported):
    import_id = imported
    start(settings, store, dispatcher, Original(clock), import_id)
    run_to_end(settings, store, dispatcher, Original(clock, status=401), clock, import_id)
    failed = state(store, import_id)
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_api_key"
    assert failed["jobs"][0]["answered"] == 0 and failed["jobs"][0]["file_id"] is None
