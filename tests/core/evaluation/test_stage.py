"""The evaluating stage against real Redis, the provider played by an OpenAI-shaped MockTransport.

What is checked: answers are scored and stored per example; a re-run resumes (only missing
examples are asked); a live evaluator's lease turns duplicates away; retryable provider errors
are retried; the job then succeeds with the summary and queues the ``evaluated`` webhook.
"""

from __future__ import annotations

import json
import secrets
import threading

import httpx2
import openai
import pytest

from service.core.backends.remote import RemoteBackend
from service.core.completions import CompletionsContext
from service.core.dispatch import RecordingDispatcher
from service.core.evaluation import stage
from service.core.store import evaluations, keys
from service.core.store import jobs as repo
from tests.api.jobfactory import finished_job

ROWS = [("华夏基金怎么样？", "华夏还可以。"), ("军工要割肉吗？", "先看基本面。"), ("hello?", "hi there")]


class FakeOpenAI:
    """Answers like OpenAI: the reference for the first two prompts, after ``fail_first`` 429s."""

    def __init__(self, fail_first: int = 0) -> None:
        self.asked: list[str] = []
        self.models: set[str] = set()
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        prompt = body["messages"][-1]["content"]
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                return httpx2.Response(
                    429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}}
                )
            self.asked.append(prompt)
            self.models.add(body["model"])
        answer = dict(ROWS[:2]).get(prompt, "不知道")
        return httpx2.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            },
        )


def context(settings, store, fake: FakeOpenAI) -> CompletionsContext:
    client = openai.OpenAI(
        api_key="k",
        base_url="http://provider.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(fake)),
    )
    backend = RemoteBackend("openai", client, "openai:test", store)
    return CompletionsContext(
        settings=settings, store=store, dispatcher=RecordingDispatcher(), backends=lambda _: backend
    )


@pytest.fixture
def evaluating(store, tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]},
                ensure_ascii=False,
            )
            + "\n"
            for p, r in ROWS
        ),
        encoding="utf-8",
    )
    return finished_job(
        store,
        "alpha",
        provider="openai",
        status="running",
        stage="evaluating",
        prepared={"train": str(tmp_path / "train.jsonl"), "test": str(test_file)},
        prepare={"split": {"test": 0.1}},
        webhook={"url": "http://127.0.0.1:9/hook", "events": ["fine_tuning.job.evaluated"]},
    )


def test_evaluates_scores_and_succeeds_with_the_evaluated_webhook(settings, store, evaluating):
    fake = FakeOpenAI(fail_first=2)  # two 429s: retried, not recorded as errors
    stage.run_evaluate(context(settings, store, fake), evaluating["id"])
    job = repo.load(store, evaluating["id"])
    assert job["status"] == "succeeded" and job["stage"] == "done"
    summary = job["evaluation"]["metrics"]
    assert job["evaluation"]["status"] == "completed" and summary["answered"] == 3 and summary["errors"] == 0
    assert summary["exact_match"] == pytest.approx(2 / 3, abs=1e-4) and job["evaluation"]["baseline"] is None
    rows = evaluations.rows(store, job["id"], "model")
    assert rows[2]["answer"] == "不知道" and rows[0]["char_f1"] == 1.0
    outbox = [
        json.loads(store.r.get(keys.webhook_delivery(d)))
        for d in store.r.zrange(keys.job_deliveries(job["id"]), 0, -1)
    ]
    assert [d["type"] for d in outbox] == ["fine_tuning.job.evaluated"]
    assert outbox[0]["data"]["evaluation"]["metrics"] == summary


def test_a_rerun_resumes_and_a_live_lease_turns_duplicates_away(settings, store, evaluating):
    fake = FakeOpenAI()
    job_id = evaluating["id"]
    token = secrets.token_hex(4)
    assert evaluations.acquire_lease(store, job_id, "evaluating", 60, token)
    stage.run_evaluate(context(settings, store, fake), job_id)  # another evaluator is alive
    assert fake.asked == [] and repo.load(store, job_id)["stage"] == "evaluating"
    evaluations.release_lease(store, job_id, "evaluating", token)
    # A killed run had answered the first example already.
    evaluations.put_row(
        store,
        job_id,
        "model",
        0,
        {
            "index": 0,
            "prompt": ROWS[0][0],
            "reference": ROWS[0][1],
            "answer": ROWS[0][1],
            "exact_match": 1.0,
            "char_f1": 1.0,
            "rouge_l": 1.0,
            "bleu": 100.0,
        },
    )
    stage.run_evaluate(context(settings, store, fake), job_id)
    assert sorted(fake.asked) == sorted(p for p, _ in ROWS[1:])
    assert repo.load(store, job_id)["evaluation"]["metrics"]["answered"] == 3
    stage.run_evaluate(context(settings, store, fake), job_id)  # a late duplicate: a no-op
    assert len(fake.asked) == 2


def test_a_cancelled_job_is_not_evaluated(settings, store, evaluating):
    fake = FakeOpenAI()
    repo.update(store, evaluating["id"], lambda job, pipe: {**job, "status": "cancelled", "stage": "done"})
    stage.run_evaluate(context(settings, store, fake), evaluating["id"])
    assert fake.asked == [] and evaluations.count(store, evaluating["id"], "model") == 0


def test_an_evaluate_only_job_asks_the_model_it_evaluates(settings, store, evaluating):
    """The original model of an imported job answers through its backend; nothing is trained."""
    original = "ft:gpt-4o-mini-2024-07-18:acme:support:AbC123xy"
    imported = finished_job(
        store,
        "alpha",
        provider="openai",
        fine_tuned_model=original,
        import_id="imp-1",
        provider_fine_tuned_model=None,  # an imported job keeps no provider state of its own
    )
    repo.update(
        store,
        evaluating["id"],
        lambda job, pipe: {
            **job,
            "fine_tuned_model": None,
            "evaluated_model": original,
            "evaluated_job": imported["id"],
        },
    )
    fake = FakeOpenAI()
    stage.run_evaluate(context(settings, store, fake), evaluating["id"])
    job = repo.load(store, evaluating["id"])
    assert fake.models == {original} and len(fake.asked) == 3
    assert job["status"] == "succeeded" and job["evaluation"]["metrics"]["answered"] == 3
    assert job["fine_tuned_model"] is None


def test_an_evaluate_only_job_fails_when_its_model_is_gone(settings, store, evaluating):
    imported = finished_job(store, "alpha", provider="openai", model_deleted=True)
    repo.update(
        store,
        evaluating["id"],
        lambda job, pipe: {
            **job,
            "evaluated_model": imported["fine_tuned_model"],
            "evaluated_job": imported["id"],
        },
    )
    fake = FakeOpenAI()
    stage.run_evaluate(context(settings, store, fake), evaluating["id"])
    job = repo.load(store, evaluating["id"])
    assert fake.asked == [] and job["status"] == "failed"
    assert job["error"]["code"] == "model_not_found"


def test_a_dpo_job_scores_answers_against_the_preferred_output(settings, store, tmp_path):
    """A provider that cannot score given replies (OpenAI's API) still gets the generation metrics;
    preference_accuracy is null and an event says why."""
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(
        "".join(
            json.dumps(
                {
                    "input": {"messages": [{"role": "user", "content": p}]},
                    "preferred_output": [{"role": "assistant", "content": r}],
                    "non_preferred_output": [{"role": "assistant", "content": "随便。"}],
                },
                ensure_ascii=False,
            )
            + "\n"
            for p, r in ROWS
        ),
        encoding="utf-8",
    )
    job = finished_job(
        store,
        "alpha",
        provider="openai",
        status="running",
        stage="evaluating",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        prepared={"train": str(tmp_path / "train.jsonl"), "test": str(test_file)},
        prepare={"split": {"test": 0.1}},
    )
    fake = FakeOpenAI()
    stage.run_evaluate(context(settings, store, fake), job["id"])
    done = repo.load(store, job["id"])
    assert done["status"] == "succeeded", done
    summary = done["evaluation"]["metrics"]
    assert summary["answered"] == 3 and summary["exact_match"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["preference_accuracy"] is None and summary["preference_pairs"] == 0
    assert done["evaluation"]["baseline"] is None  # OpenAI does not serve the base model here
    rows = evaluations.rows(store, job["id"], "model")
    assert rows[0]["reference"] == ROWS[0][1] and rows[0]["non_preferred"] == "随便。"
    assert "preferred_logprob" not in rows[0]
    messages = [e["message"] for e in repo.events_since(store, job["id"], 0)]
    assert any("cannot score given replies" in m and "preference_accuracy" in m for m in messages)
