"""Each grader type scored on one sample, against hand-computed values and OpenAI's documented examples."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidRequest, Unprocessable
from service.core.graders import run, spec

POLICY = spec.Policy()
CTX = run.Context()


def score(grader: dict, sample: str, item: dict | None = None) -> run.Grade:
    return run.grade(spec.parse(grader, POLICY), sample, item, CTX)


def string_check(operation: str) -> dict:
    return {
        "type": "string_check",
        "name": "check",
        "operation": operation,
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
    }


@pytest.mark.parametrize(
    ("operation", "sample", "reference", "expected"),
    [
        # OpenAI's guide: eq/ne case-sensitive (in)equality, like contains, ilike contains ignoring case.
        ("eq", "Paris", "Paris", 1.0),
        ("eq", "paris", "Paris", 0.0),
        ("ne", "paris", "Paris", 1.0),
        ("ne", "Paris", "Paris", 0.0),
        ("like", "The capital is Paris.", "Paris", 1.0),
        ("like", "The capital is paris.", "Paris", 0.0),
        ("ilike", "THE CAPITAL IS PARIS.", "Paris", 1.0),
        ("ilike", "Lyon", "Paris", 0.0),
        ("like", "答案：北京市", "北京", 1.0),
    ],
)
def test_string_check(operation, sample, reference, expected):
    assert score(string_check(operation), sample, {"reference": reference}).reward == expected


def similarity(metric: str) -> dict:
    return {
        "type": "text_similarity",
        "name": "sim",
        "evaluation_metric": metric,
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
    }


HYP, REF = "the cat sat on the mat", "the cat sat on a mat"


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        # Units: [the cat sat on the mat] vs [the cat sat on a mat].
        ("rouge_1", 5 / 6),  # 5 shared unigrams (one "the" clipped) of 6 each: P = R = 5/6
        ("rouge_2", 3 / 5),  # the-cat, cat-sat, sat-on shared of 5 bigrams each
        ("rouge_3", 2 / 4),  # the-cat-sat, cat-sat-on of 4 trigrams each
        ("rouge_4", 1 / 3),  # the-cat-sat-on of 3
        ("rouge_5", 0.0),  # no shared 5-gram
        ("rouge_l", 5 / 6),  # LCS the cat sat on mat = 5
        ("gleu", 11 / 18),  # matches 5+3+2+1 of 6+5+4+3 n-grams (1-4) on both sides
    ],
)
def test_token_metrics(metric, expected):
    assert score(similarity(metric), HYP, {"reference": REF}).reward == pytest.approx(expected)


def test_identical_and_disjoint_texts():
    for metric in ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_l"):
        assert score(similarity(metric), "北京是中国的首都", {"reference": "北京是中国的首都"}).reward == (
            pytest.approx(1.0)
        )
        assert score(similarity(metric), "abc", {"reference": "xyz"}).reward == 0.0


def test_chinese_is_compared_by_character():
    # 8 characters each, the same multiset in another order: every unigram matches.
    assert score(similarity("rouge_1"), "北京是中国的首都", {"reference": "中国的首都是北京"}).reward == 1.0
    # LCS 中国的首都 = 5 of 8: F = 5/8.
    assert score(similarity("rouge_l"), "北京是中国的首都", {"reference": "中国的首都是北京"}).reward == (
        pytest.approx(5 / 8)
    )


def test_fuzzy_match_is_rapidfuzz_wratio_with_default_processing():
    # default_process lowercases, turns punctuation into spaces and trims: "Hello World!" -> "hello world".
    assert score(similarity("fuzzy_match"), "Hello World!", {"reference": "hello world"}).reward == 1.0
    # "Hello, World!" -> "hello  world" (two spaces): indel distance 1 over 23 characters.
    assert score(similarity("fuzzy_match"), "Hello, World!", {"reference": "hello world"}).reward == (
        pytest.approx(1 - 1 / 23)
    )
    # "abcd" vs "abce": indel distance 2 over 8 characters -> ratio 0.75.
    assert score(similarity("fuzzy_match"), "abcd", {"reference": "abce"}).reward == pytest.approx(0.75)


def test_bleu_is_sacrebleu_sentence_bleu_over_100():
    assert score(similarity("bleu"), HYP, {"reference": REF}).reward == pytest.approx(0.5372849659117709)


@pytest.mark.parametrize("metric", ["meteor", "cosine"])
def test_meteor_and_cosine_are_refused_with_the_reason(metric):
    with pytest.raises(Unprocessable) as caught:
        spec.parse(similarity(metric), POLICY)
    assert caught.value.param == "grader.evaluation_metric" and caught.value.code == "unsupported_metric"
    assert ("WordNet" if metric == "meteor" else "embedding") in caught.value.message


MULTI = {
    "type": "multi",
    "name": "extraction",
    "graders": {
        "name": {
            **similarity("fuzzy_match"),
            "input": "{{sample.output_json.name}}",
            "reference": "{{item.name}}",
        },
        "email": {
            **string_check("eq"),
            "input": "{{sample.output_json.email}}",
            "reference": "{{item.email}}",
        },
    },
    "calculate_output": "(0.5 * name + 0.5 * email)",
}


def test_multi_combines_named_scores():
    result = score(MULTI, '{"name": "abcd", "email": "a@b.c"}', {"name": "abce", "email": "a@b.c"})
    assert result.sub_rewards == {"name": pytest.approx(0.75), "email": 1.0}
    assert result.reward == pytest.approx(0.875)


def test_multi_missing_variable_names_the_sub_grader_path():
    with pytest.raises(Unprocessable) as caught:
        score(MULTI, '{"name": "x", "email": "y"}', {"name": "x"})
    assert caught.value.param == "grader.graders.email.reference"


def test_multi_accepts_the_sdks_single_grader_form_keyed_by_its_name():
    grader = {**MULTI, "graders": MULTI["graders"]["email"], "calculate_output": "check * 2"}
    assert score(grader, '{"email": "a"}', {"email": "a"}).reward == 2.0


@pytest.mark.parametrize(
    ("grader", "param"),
    [
        ({"type": "string_check", "name": "x", "input": "a", "reference": "b"}, "grader.operation"),
        ({**string_check("eq"), "extra": 1}, "grader.extra"),
        ({**string_check("eq"), "input": 3}, "grader.input"),
        ({**string_check("eq"), "name": ""}, "grader.name"),
        ({"type": "regex", "name": "x"}, "grader.type"),
        ({**MULTI, "graders": {"a": MULTI}}, "grader.graders.a.type"),
        ({**MULTI, "graders": {"bad key": string_check("eq")}}, "grader.graders.bad key"),
        (
            {**MULTI, "graders": {"a": {**string_check("eq"), "reference": "{{ctx.x}}"}}},
            "grader.graders.a.reference",
        ),
    ],
)
def test_invalid_graders_name_the_dotted_path(grader, param):
    with pytest.raises(InvalidRequest) as caught:
        spec.parse(grader, POLICY)
    assert caught.value.param == param


def test_errors_take_the_callers_root():
    with pytest.raises(InvalidRequest) as caught:
        spec.parse({**string_check("eq"), "operation": "gt"}, POLICY, root="method.reinforcement.grader")
    assert caught.value.param == "method.reinforcement.grader.operation"


def test_python_grader_is_refused_while_switched_off():
    grader = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1\n"}
    with pytest.raises(Unprocessable) as caught:
        spec.parse(grader, spec.Policy(python_enabled=False))
    assert caught.value.code == "python_grader_disabled" and caught.value.param == "grader.type"


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("def grade(sample, item)\n    return 1\n", "does not parse"),
        ("def score(sample, item):\n    return 1\n", "grade(sample, item)"),
        ("x = '" + "a" * 300 * 1024 + "'\n", "larger than 256 kB"),
    ],
)
def test_python_source_is_checked_without_running_it(source, why):
    with pytest.raises(InvalidRequest) as caught:
        spec.parse({"type": "python", "name": "p", "source": source}, spec.Policy(python_enabled=True))
    assert why in caught.value.message and caught.value.param == "grader.source"


def test_run_answer_has_openais_shape():
    grader = spec.parse(MULTI, POLICY)
    answer = run.run(grader, '{"name": "abcd", "email": "a@b.c"}', {"name": "abcd", "email": "x"}, CTX)
    assert answer["reward"] == pytest.approx(0.5)
    assert answer["sub_rewards"] == {"name": 1.0, "email": 0.0}
    assert answer["metadata"]["name"] == "extraction" and answer["metadata"]["type"] == "multi"
    assert set(answer["metadata"]["errors"]) >= set(run.ERROR_FLAGS)
    assert not any(answer["metadata"]["errors"][flag] for flag in run.ERROR_FLAGS)
