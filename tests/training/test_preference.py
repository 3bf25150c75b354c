"""Held-out preference scoring on the tiny model: each reply's summed log-probability is the one
DPO trains on, ``preference_accuracy`` counts strict preferences only (a tie is not one), and bad
rows or over-long pairs are clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.training import TORCH_MISSING

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.core.evaluation.metrics import preference_accuracy
from service.training.errors import TrainingError

QUESTION = [{"role": "user", "content": "消费现在还能买吗"}]
GOOD = "消费目前估值处于历史中等的位置,可以小仓位试探。"
OTHER = "黄金可以适当止盈一部分。供参考。"


def reply(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": text}]


def test_scores_are_the_log_probabilities_dpo_trains_on(tiny_model: Path) -> None:
    from service.training.data import encode_preference
    from service.training.inference import get_model
    from service.training.preference import completion_logprob, score_replies

    logprobs, tokens = score_replies(str(tiny_model), QUESTION, [reply(GOOD), reply(OTHER)], device="cpu")
    loaded = get_model(str(tiny_model), "cpu")
    pair = encode_preference(
        loaded.tokenizer,
        {
            "input": {"messages": QUESTION},
            "preferred_output": reply(GOOD),
            "non_preferred_output": reply(OTHER),
        },
    )
    assert tokens == [len(pair.chosen_ids), len(pair.rejected_ids)]
    import torch

    with torch.inference_mode():
        expected = [
            completion_logprob(loaded.model, pair.prompt_ids, ids, "cpu")
            for ids in (pair.chosen_ids, pair.rejected_ids)
        ]
    assert logprobs == pytest.approx(expected, abs=1e-5)
    assert all(lp < 0 for lp in logprobs)  # a sum of log-probabilities, one per reply token


def test_a_tie_is_not_a_preference(tiny_model: Path) -> None:
    from service.training.preference import score_replies

    # The same reply twice: the model cannot prefer either, so the pair counts as not preferred.
    (first, second), _ = score_replies(str(tiny_model), QUESTION, [reply(GOOD), reply(GOOD)], device="cpu")
    assert first == second
    assert preference_accuracy([first - second]) == 0.0
    (good, other), _ = score_replies(str(tiny_model), QUESTION, [reply(GOOD), reply(OTHER)], device="cpu")
    assert preference_accuracy([good - other, first - second]) == (0.5 if good > other else 0.0)


def test_evaluate_preferences_counts_pairs_the_same_way(tiny_model: Path, tmp_path: Path) -> None:
    from service.training.preference import evaluate_preferences, score_replies

    pairs = [(GOOD, OTHER), (OTHER, GOOD), ("短。", GOOD)]
    path = tmp_path / "test.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "input": {"messages": QUESTION},
                    "preferred_output": reply(a),
                    "non_preferred_output": reply(b),
                },
                ensure_ascii=False,
            )
            + "\n"
            for a, b in pairs
        ),
        encoding="utf-8",
    )
    margins = []
    for a, b in pairs:
        (x, y), _ = score_replies(str(tiny_model), QUESTION, [reply(a), reply(b)], device="cpu")
        margins.append(x - y)
    summary = evaluate_preferences(str(tiny_model), path, device="cpu")
    assert summary.pairs == 3
    # Swapping a pair's outputs flips its margin: exactly one of the first two pairs is preferred.
    assert margins[0] == pytest.approx(-margins[1], abs=1e-5) and margins[0] != 0
    assert summary.preference_accuracy == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert summary.mean_margin == pytest.approx(sum(margins) / 3, abs=1e-4)


@pytest.mark.parametrize(
    ("messages", "replies", "fragment"),
    [
        ([], [reply(GOOD)], "non-empty list"),
        ([*QUESTION, {"role": "assistant", "content": "x"}], [reply(GOOD)], "must not end with an assistant"),
        (QUESTION, [[]], "`replies[0]` must be a list of exactly one assistant message"),
        (QUESTION, [reply(GOOD), [{"role": "user", "content": "x"}]], "`replies[1][0].role`"),
        (QUESTION, [reply(GOOD), reply(" ")], "`replies[1][0].content` is empty"),
    ],
)
def test_bad_rows_are_value_errors_naming_the_field(
    tiny_model: Path, messages: Any, replies: Any, fragment: str
) -> None:
    from service.training.preference import score_replies

    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        score_replies(str(tiny_model), messages, replies, device="cpu")


def test_a_pair_over_the_context_is_context_length_exceeded(tiny_model: Path) -> None:
    from service.training.inference import CONTEXT_LENGTH_EXCEEDED
    from service.training.preference import score_replies

    with pytest.raises(TrainingError) as caught:
        score_replies(str(tiny_model), QUESTION, [reply(GOOD), reply("很长的回答" * 400)], device="cpu")
    assert caught.value.code == CONTEXT_LENGTH_EXCEEDED and "512" in caught.value.message


def test_scores_travel_through_the_infer_handoff(tiny_model: Path, store: Any, dispatcher: Any) -> None:
    """``request_scores`` parks the pair in Redis and enqueues ``tuneline.infer.score``; the infer
    worker's ``serve_scores`` (here in a thread, with the real engine) answers it; a bad row comes
    back as the caller's error, and the worker keeps serving."""
    import threading

    from service.core import tasknames
    from service.core.backends.base import ScoreRequest
    from service.core.errors import TunelineError
    from service.core.inference import request_scores, serve_scores
    from service.core.jobs.record import Job
    from service.training.preference import score_replies

    job = Job(id="ftjob-score", tenant="t", provider="local", status="running", stage="evaluating")

    def worker() -> None:
        while not served.is_set():
            for task, args in list(dispatcher.sent):
                if task == tasknames.INFER_SCORE and args[0] not in handled:
                    handled.add(args[0])
                    serve_scores(store, args[0], lambda *a: score_replies(*a, device="cpu"))
            served.wait(0.01)

    handled: set[str] = set()
    served = threading.Event()
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        good = request_scores(
            store, dispatcher, job, str(tiny_model), ScoreRequest(QUESTION, [reply(GOOD), reply(OTHER)]), 30
        )
        expected, tokens = score_replies(str(tiny_model), QUESTION, [reply(GOOD), reply(OTHER)], device="cpu")
        assert good.logprobs == pytest.approx(expected) and good.tokens == tokens
        with pytest.raises(TunelineError) as caught:
            request_scores(store, dispatcher, job, str(tiny_model), ScoreRequest(QUESTION, [[]]), 30)
        assert "replies[0]" in caught.value.message
    finally:
        served.set()
        thread.join()
