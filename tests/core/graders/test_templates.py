"""Template rendering: OpenAI's item and sample namespaces, and errors that name the grader path."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidRequest, Unprocessable
from service.core.graders.templates import Sample, Where, check, render

WHERE = Where("graders.correct.reference")
ITEM = {"answer": "巴黎", "meta": {"tags": ["geo", "capital"], "year": 2024}, "n": 3}


def test_item_fields_nested_paths_and_indices():
    sample = Sample.from_text("x")
    assert render("{{item.answer}}", ITEM, sample, WHERE) == "巴黎"
    assert render("{{ item.meta.tags[1] }}!", ITEM, sample, WHERE) == "capital!"
    assert render("{{item.meta.year}}/{{item.n}}", ITEM, sample, WHERE) == "2024/3"
    # A non-string value is inserted as compact JSON, Chinese unescaped.
    assert render("{{item.meta}}", ITEM, sample, WHERE) == '{"tags":["geo","capital"],"year":2024}'
    assert render("plain text", ITEM, sample, WHERE) == "plain text"


def test_sample_output_text_and_output_json():
    sample = Sample.from_text('{"city": "Paris", "pop": [2.1]}')
    assert render("{{sample.output_text}}", {}, sample, WHERE) == '{"city": "Paris", "pop": [2.1]}'
    assert render("{{sample.output_json.city}}", {}, sample, WHERE) == "Paris"
    assert render("{{sample.output_json.pop[0]}}", {}, sample, WHERE) == "2.1"


def test_missing_item_field_names_grader_path_and_variable():
    with pytest.raises(Unprocessable) as caught:
        render("{{item.reference_answer}}", ITEM, Sample.from_text("x"), WHERE)
    assert caught.value.param == "grader.graders.correct.reference"
    assert caught.value.code == "invalid_variable"
    assert "graders.correct.reference" in caught.value.message
    assert "item.reference_answer" in caught.value.message


def test_output_json_of_a_sample_that_is_not_json_is_an_error():
    with pytest.raises(Unprocessable) as caught:
        render("{{sample.output_json.city}}", {}, Sample.from_text("Paris"), WHERE)
    assert "not valid JSON" in caught.value.message


def test_unknown_namespace_and_unsupported_sample_fields_are_refused_at_validation():
    with pytest.raises(InvalidRequest) as caught:
        check("{{ row.answer }}", WHERE)
    assert caught.value.param == "grader.graders.correct.reference"
    with pytest.raises(Unprocessable) as refused:
        check("{{ sample.output_tools }}", WHERE)
    assert refused.value.code == "unsupported_template_variable"
    with pytest.raises(InvalidRequest):
        check("{{ item.a..b }}", WHERE)
