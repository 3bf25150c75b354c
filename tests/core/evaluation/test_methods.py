"""Per-method evaluators: which test rows they read, and what DPO adds to rows and summaries."""

from __future__ import annotations

import pytest

from service.core.backends.base import BackendError, ScoreRequest, ScoreResult
from service.core.evaluation import methods
from service.core.evaluation.metrics import preference_accuracy

PAIR = {
    "input": {"messages": [{"role": "system", "content": "助手"}, {"role": "user", "content": "消费能买吗"}]},
    "preferred_output": [{"role": "assistant", "content": "可以小仓位试探。"}],
    "non_preferred_output": [{"role": "assistant", "content": [{"type": "text", "text": "黄金"}]}],
}


def test_the_evaluator_follows_the_jobs_method():
    assert methods.for_method(None) is methods.SUPERVISED
    assert methods.for_method({"type": "supervised"}) is methods.SUPERVISED
    assert isinstance(methods.for_method({"type": "dpo", "dpo": {}}), methods.Preference)
    assert methods.for_method({"type": "dpo"}).test_formats == ("preference",)


def test_preference_rows_are_asked_their_prompt_and_scored_against_the_preferred_output():
    example = methods.Preference().example(3, PAIR, None)
    assert example is not None
    assert example.messages == PAIR["input"]["messages"] and example.prompt is None
    assert (example.index, example.shown, example.reference) == (3, "消费能买吗", "可以小仓位试探。")
    assert example.fields == {"non_preferred": "黄金"}
    for broken in ({**PAIR, "input": {}}, {**PAIR, "preferred_output": []}, {"messages": []}):
        assert methods.Preference().example(0, broken, None) is None
    # A supervised evaluator does not read preference rows (and the other way round).
    assert methods.SUPERVISED.example(0, PAIR, None) is None


def test_a_pair_is_scored_by_the_log_probabilities_of_its_two_outputs():
    preference = methods.Preference()
    example = preference.example(0, PAIR, None)
    assert example is not None
    asked: list[ScoreRequest] = []

    def score(request: ScoreRequest) -> ScoreResult:
        asked.append(request)
        return ScoreResult(logprobs=[-3.5, -7.25], tokens=[4, 2])

    row = preference.score(example, {"answer": "x"}, score)
    assert row == {"preferred_logprob": -3.5, "non_preferred_logprob": -7.25}
    assert asked[0].replies == [PAIR["preferred_output"], PAIR["non_preferred_output"]]
    assert asked[0].messages == PAIR["input"]["messages"]

    def refuse(request: ScoreRequest) -> ScoreResult:
        raise BackendError("no worker", kind="permanent", code="inference_timeout")

    assert preference.score(example, {}, refuse) == {
        "preference_error": {"code": "inference_timeout", "message": "no worker"}
    }
    assert preference.score(example, {}, None) == {}  # the provider cannot score: nothing added


def test_preference_accuracy_counts_strict_preferences_only():
    assert preference_accuracy([2.0, -1.0, 0.5, -0.25]) == 0.5
    assert preference_accuracy([0.0, 0.0]) == 0.0  # a tie is not a preference
    assert preference_accuracy([1e-9]) == 1.0
    assert preference_accuracy([]) is None


def test_the_summary_covers_the_scored_pairs():
    rows = [
        {"preferred_logprob": -2.0, "non_preferred_logprob": -5.0},  # margin +3
        {"preferred_logprob": -6.0, "non_preferred_logprob": -6.0},  # a tie: not preferred
        {"preferred_logprob": -9.0, "non_preferred_logprob": -8.0},  # margin -1
        {"preference_error": {"code": "inference_failed", "message": "x"}},  # not scored
    ]
    summary = methods.Preference().summarize(rows)
    assert summary == {
        "preference_accuracy": pytest.approx(1 / 3, abs=1e-4),
        "preference_margin": 0.6667,
        "preference_pairs": 3,
    }
    assert methods.Preference().summarize([]) == {
        "preference_accuracy": None,
        "preference_margin": None,
        "preference_pairs": 0,
    }
    assert methods.SUPERVISED.summarize(rows) == {}
