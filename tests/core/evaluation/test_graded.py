"""A reinforcement job's held-out evaluation: each test row answered, scored by the job's grader,
the mean ``grader_score`` in the summary (real Redis; the provider an OpenAI-shaped MockTransport)."""

from __future__ import annotations

import json

import pytest

from service.core.evaluation import results, stage
from service.core.store import evaluations
from service.core.store import jobs as repo
from tests.api.jobfactory import finished_job
from tests.core.evaluation.test_stage import FakeOpenAI, context

KEYWORD = "华夏还可以。"  # FakeOpenAI answers the first two prompts of test_stage.ROWS with their references
PROMPTS = ["华夏基金怎么样？", "军工要割肉吗？", "hello?"]
GRADER = {
    "type": "string_check",
    "name": "says",
    "input": "{{sample.output_text}}",
    "reference": "{{item.expected}}",
    "operation": "eq",
}


@pytest.fixture
def evaluating(store, tmp_path):
    test_file = tmp_path / "test.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": PROMPTS[0]}], "expected": KEYWORD},
        {"messages": [{"role": "user", "content": PROMPTS[1]}], "expected": "先看基本面。"},
        {"messages": [{"role": "user", "content": PROMPTS[2]}], "expected": "hi"},
    ]
    test_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return finished_job(
        store,
        "alpha",
        provider="openai",
        status="running",
        stage="evaluating",
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER}},
        hyperparameters={"max_completion_length": 24},
        prepared={"train": str(tmp_path / "train.jsonl"), "test": str(test_file)},
        prepare={"split": {"test": 0.1}},
    )


def test_the_grader_scores_each_held_out_answer(settings, store, evaluating) -> None:
    fake = FakeOpenAI()
    stage.run_evaluate(context(settings, store, fake), evaluating["id"])
    job = repo.load(store, evaluating["id"])
    assert job["status"] == "succeeded" and job["evaluation"]["status"] == "completed"
    # Answers: the expected text for the first two prompts, "不知道" for the last.
    assert job["evaluation"]["metrics"] == {"examples": 3, "answered": 3, "errors": 0, "grader_score": 0.6667}
    assert sorted(fake.asked) == sorted(PROMPTS)
    rows = evaluations.rows(store, job["id"], "model")
    assert [rows[i]["grader_score"] for i in range(3)] == [1.0, 1.0, 0.0]
    page = results.job_evaluation(store, _principal(job["tenant"]), job["id"], None, 10)
    assert [e["grader_score"] for e in page["data"]] == [1.0, 1.0, 0.0]
    assert page["data"][0]["prompt"] == PROMPTS[0]
    events = [e["message"] for e in repo.list_events(store, job["id"], None, 50)[0]]
    assert any("grader_score 0.6667 over 3/3 examples" in m for m in events)


def _principal(tenant: str):
    from service.core.auth import Principal

    return Principal(tenant=tenant, role="member", key_id="k")
