"""``calculate_output`` formulas: arithmetic over grader names, parsed without eval, clear failures."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidRequest
from service.core.graders.formula import FormulaError, compile_formula

NAMES = {"name", "email", "score"}


def value(text: str, **scores: float) -> float:
    return compile_formula(text, NAMES, "grader.calculate_output").evaluate(scores)


def test_openai_guide_weighted_average():
    assert value("(0.5 * name + 0.5 * email)", name=0.8, email=1.0, score=0) == pytest.approx(0.9)


def test_operators_and_functions():
    scores = {"name": 0.25, "email": 4.0, "score": -2.0}
    assert value("email ^ 0.5", **scores) == pytest.approx(2.0)  # OpenAI writes powers with ^
    assert value("email ** 2 - name", **scores) == pytest.approx(15.75)
    assert value("min(name, email, 1) + max(score, 0)", **scores) == pytest.approx(0.25)
    assert value("abs(score) + floor(2.7) + ceil(0.1)", **scores) == pytest.approx(5.0)
    assert value("sqrt(email) + log(exp(1)) - -1", **scores) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("text", "scores", "why"),
    [
        ("name / email", {"name": 1.0, "email": 0.0}, "division by zero"),
        ("10 ^ 400", {}, "overflow"),
        ("exp(name)", {"name": 1000.0}, "overflow"),
        ("sqrt(name)", {"name": -1.0}, "math domain error"),
        ("log(name)", {"name": 0.0}, "math domain error"),
        ("name ^ 0.5", {"name": -8.0}, "math domain error"),
    ],
)
def test_undefined_results_are_formula_errors(text, scores, why):
    full = {"name": 0.0, "email": 0.0, "score": 0.0, **scores}
    with pytest.raises(FormulaError) as caught:
        value(text, **full)
    assert why in caught.value.message
    assert caught.value.param == "grader.calculate_output" and caught.value.status == 422


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("name + emial", "unknown name 'emial'"),
        ("min", "unknown name 'min'"),
        ("__import__('os').system('true')", "only min, max"),
        ("name.real", "Attribute is not allowed"),
        ("name if email else score", "IfExp is not allowed"),
        ("name < email", "Compare is not allowed"),
        ("name % 2", "Mod is not allowed"),
        ("'a' + name", "is not a number"),
        ("abs(name, email)", "abs() takes 1 argument"),
        ("max()", "max() takes one or more"),
        ("(name", "does not parse"),
        ("", "is empty"),
        ("-" * 990 + "1", "nested too deeply"),
        ("1+" * 600 + "1", "longer than 1000"),
    ],
)
def test_invalid_formulas_are_rejected_before_running(text, why):
    with pytest.raises(InvalidRequest) as caught:
        compile_formula(text, NAMES, "grader.calculate_output")
    assert why in caught.value.message
    assert caught.value.param == "grader.calculate_output"
