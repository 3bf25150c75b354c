"""OpenAI's grader routes, driven by the official SDK against a live Tuneline server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI
from werkzeug.serving import make_server

from service.app import create_app
from service.core.dispatch import RecordingDispatcher
from service.settings import Settings
from tests.api.jobfactory import finished_job

TENANT = "graders"

STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
MULTI = {
    "type": "multi",
    "name": "extraction",
    "graders": {
        "name": {
            "type": "text_similarity",
            "name": "name",
            "input": "{{sample.output_json.name}}",
            "reference": "{{item.name}}",
            "evaluation_metric": "fuzzy_match",
        },
        "fund": {
            "type": "string_check",
            "name": "fund",
            "input": "{{sample.output_json.fund}}",
            "reference": "{{item.fund}}",
            "operation": "eq",
        },
    },
    "calculate_output": "0.25 * name + 0.75 * fund",
}
PYTHON = {
    "type": "python",
    "name": "length",
    "source": "def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / item['target'])\n",
}


def _serve(settings: Settings) -> Iterator[str]:
    app = create_app(settings, dispatcher=RecordingDispatcher())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    yield from _serve(settings)


@pytest.fixture
def live_python(settings: Settings) -> Iterator[str]:
    yield from _serve(
        settings.with_overrides(
            python_grader_enabled=True, python_grader_timeout_s=5, python_grader_memory_mb=256
        )
    )


def _sdk(url: str, token: str) -> OpenAI:
    return OpenAI(base_url=url, api_key=token, max_retries=0, timeout=30)


def test_validate_returns_the_grader(live, make_key):
    client = _sdk(live, make_key(TENANT))
    answer = client.fine_tuning.alpha.graders.validate(grader=STRING_CHECK)
    assert answer.grader is not None
    assert answer.grader.type == "string_check" and answer.grader.reference == "{{item.answer}}"


def test_run_string_check_passes_and_fails(live, make_key):
    client = _sdk(live, make_key(TENANT))
    hit = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="42", item={"answer": "42"})
    miss = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="41", item={"answer": "42"})
    assert (hit.reward, miss.reward) == (1.0, 0.0)
    assert hit.metadata.name == "exact" and hit.metadata.type == "string_check"
    assert not any(
        getattr(hit.metadata.errors, flag)
        for flag in (
            "formula_parse_error",
            "invalid_variable_error",
            "python_grader_runtime_error",
            "other_error",
        )
    )


def test_run_multi_with_json_sample_and_chinese_item(live, make_key):
    client = _sdk(live, make_key(TENANT))
    result = client.fine_tuning.alpha.graders.run(
        grader=MULTI,
        model_sample='{"name": "张伟", "fund": "易方达蓝筹精选"}',
        item={"name": "张伟", "fund": "易方达蓝筹精选"},
    )
    assert result.reward == pytest.approx(1.0)
    assert result.sub_rewards == {"name": 1.0, "fund": 1.0}
    wrong_fund = client.fine_tuning.alpha.graders.run(
        grader=MULTI,
        model_sample='{"name": "张伟", "fund": "华夏成长"}',
        item={"name": "张伟", "fund": "易方达蓝筹精选"},
    )
    assert wrong_fund.reward == pytest.approx(0.25)  # 0.25 * 1.0 (name) + 0.75 * 0.0 (fund)


def test_missing_item_field_names_the_grader_path(live, make_key):
    client = _sdk(live, make_key(TENANT))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.fine_tuning.alpha.graders.run(
            grader=MULTI, model_sample='{"name": "a", "fund": "b"}', item={"name": "a"}
        )
    error = caught.value.body
    assert error["param"] == "grader.graders.fund.reference"
    assert error["code"] == "invalid_variable" and "item.fund" in error["message"]


def test_bad_grader_errors_carry_the_dotted_path(live, make_key):
    client = _sdk(live, make_key(TENANT))
    bad_operation = {**STRING_CHECK, "operation": "startswith"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=bad_operation)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "grader.operation"
    unknown_name = {**MULTI, "calculate_output": "name + funds"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=unknown_name)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "grader.calculate_output"
    assert "unknown name 'funds'" in caught.value.body["message"]


def test_division_by_zero_in_the_formula_is_a_clear_error(live, make_key):
    client = _sdk(live, make_key(TENANT))
    grader = {**MULTI, "calculate_output": "name / fund"}
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.fine_tuning.alpha.graders.run(
            grader=grader,  # type: ignore[arg-type]
            model_sample='{"name": "a", "fund": "x"}',
            item={"name": "a", "fund": "y"},
        )
    assert caught.value.body["param"] == "grader.calculate_output"
    assert "division by zero" in caught.value.body["message"]


def test_meteor_and_cosine_are_refused(live, make_key):
    client = _sdk(live, make_key(TENANT))
    for metric in ("meteor", "cosine"):
        grader = {**MULTI["graders"]["name"], "evaluation_metric": metric}  # type: ignore[index]
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
        assert caught.value.body["param"] == "grader.evaluation_metric"
        assert caught.value.body["code"] == "unsupported_metric"


def test_python_grader_is_refused_unless_enabled(live, make_key):
    client = _sdk(live, make_key(TENANT))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=PYTHON)
    assert caught.value.body["code"] == "python_grader_disabled"
    assert "TUNELINE_PYTHON_GRADER_ENABLED" in caught.value.body["message"]


def test_python_grader_runs_when_enabled(live_python, make_key):
    client = _sdk(live_python, make_key(TENANT))
    assert client.fine_tuning.alpha.graders.validate(grader=PYTHON).grader is not None
    result = client.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="abcd", item={"target": 8})
    assert result.reward == pytest.approx(0.5)


def test_python_grader_that_loops_is_stopped_and_reported(live_python, make_key):
    client = _sdk(live_python, make_key(TENANT))
    looping = {**PYTHON, "source": "def grade(sample, item):\n    while True:\n        pass\n"}
    result = client.fine_tuning.alpha.graders.run(grader=looping, model_sample="x", item={})
    assert result.reward == 0.0
    assert result.metadata.errors.python_grader_runtime_error
    details = result.metadata.errors.python_grader_runtime_error_details or ""
    assert details.startswith(("timeout:", "cpu_limit:"))
    # The server keeps serving after the grader was stopped.
    again = client.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="abcdefgh", item={"target": 8})
    assert again.reward == pytest.approx(1.0)


def test_judge_must_be_one_of_the_callers_models(live, make_key, store):
    client = _sdk(live, make_key(TENANT))
    grader = {
        "type": "score_model",
        "name": "judge",
        "model": "gpt-4o-2024-08-06",
        "input": [{"role": "user", "content": "Score {{sample.output_text}} against {{item.answer}}."}],
    }
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "grader.model" and caught.value.body["code"] == "judge_unavailable"
    # Another tenant's fine-tuned model is refused the same way (no hint that it exists).
    other = finished_job(store, "someone-else")
    with pytest.raises(openai.UnprocessableEntityError):
        client.fine_tuning.alpha.graders.validate(grader={**grader, "model": other["fine_tuned_model"]})  # type: ignore[arg-type]
    own = finished_job(store, TENANT)
    checked = client.fine_tuning.alpha.graders.validate(grader={**grader, "model": own["fine_tuned_model"]})  # type: ignore[arg-type]
    assert checked.grader is not None


def test_grader_routes_need_a_key(live):
    with pytest.raises(openai.AuthenticationError):
        _sdk(live, "tl-not-a-key").fine_tuning.alpha.graders.validate(grader=STRING_CHECK)
