"""score_model and label_model with an injected judge: prompts rendered, answers parsed, failures flagged."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidRequest, Unprocessable
from service.core.graders import run, spec
from service.core.graders.judges import JudgeError, JudgeReply, JudgeRequest


class Judge:
    """A judge that answers a fixed text and remembers what it was asked."""

    def __init__(self, answer: str = "", fail: str = "") -> None:
        self.answer, self.fail = answer, fail
        self.requests: list[JudgeRequest] = []

    def __call__(self, request: JudgeRequest) -> JudgeReply:
        self.requests.append(request)
        if self.fail:
            raise JudgeError(self.fail)
        return JudgeReply(self.answer, tokens=17)


ALLOW = spec.Policy(check_model=lambda model, param: None)
SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "ft:judge",
    "range": [0, 10],
    "input": [
        {"role": "system", "content": "You grade answers about funds."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Answer: {{sample.output_text}}. "},
                "Ref: {{item.ref}}",
            ],
        },
    ],
}
LABEL = {
    "type": "label_model",
    "name": "tone",
    "model": "ft:judge",
    "labels": ["polite", "rude"],
    "passing_labels": ["polite"],
    "input": [{"role": "user", "content": "Is this polite? {{sample.output_text}}"}],
}


def grade(grader: dict, judge: Judge, sample: str = "七成", item: dict | None = None) -> dict:
    parsed = spec.parse(grader, ALLOW)
    return run.run(parsed, sample, item or {"ref": "70%"}, run.Context(judge=judge))


def test_score_model_renders_templates_and_reads_json_result():
    judge = Judge('{"steps": [], "result": 7.5}')
    answer = grade(SCORE, judge)
    assert answer["reward"] == 7.5
    assert answer["model_grader_token_usage_per_model"] == {"ft:judge": 17}
    request = judge.requests[0]
    assert request.model == "ft:judge" and request.temperature == 0.0
    assert request.messages[0]["role"] == "system" and "from 0 to 10" in request.messages[0]["content"]
    assert request.messages[1:] == [
        {"role": "system", "content": "You grade answers about funds."},
        {"role": "user", "content": "Answer: 七成. Ref: 70%"},
    ]


def test_score_model_accepts_a_bare_number():
    assert grade(SCORE, Judge(" 3 ")).get("reward") == 3.0


@pytest.mark.parametrize("answer", ["I think it is good", '{"result": 11}', '{"result": "high"}'])
def test_unreadable_or_out_of_range_scores_are_parse_errors(answer):
    result = grade(SCORE, Judge(answer))
    assert result["reward"] == 0.0 and result["metadata"]["errors"]["model_grader_parse_error"]


def test_label_model_passes_on_passing_labels():
    assert grade(LABEL, Judge('{"result": "polite"}'))["reward"] == 1.0
    assert grade(LABEL, Judge("Rude."))["reward"] == 0.0  # a bare label, case and punctuation tolerated
    unknown = grade(LABEL, Judge("neutral"))
    assert unknown["reward"] == 0.0 and unknown["metadata"]["errors"]["model_grader_parse_error"]


def test_a_judge_that_cannot_answer_is_a_server_error_flag():
    result = grade(SCORE, Judge(fail="provider timed out"))
    errors = result["metadata"]["errors"]
    assert result["reward"] == 0.0 and errors["model_grader_server_error"]
    assert errors["model_grader_server_error_details"] == "provider timed out"


def test_model_graders_are_refused_where_no_judge_can_serve():
    with pytest.raises(Unprocessable) as caught:
        spec.parse(SCORE, spec.Policy(check_model=None))
    assert caught.value.param == "grader.model" and caught.value.code == "judge_unavailable"


def test_images_are_refused_with_their_path():
    grader = {**LABEL, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}
    with pytest.raises(Unprocessable) as caught:
        spec.parse(grader, ALLOW)
    assert caught.value.param == "grader.input.0.content.0.type"


def test_label_model_checks_passing_labels():
    with pytest.raises(InvalidRequest) as caught:
        spec.parse({**LABEL, "passing_labels": ["kind"]}, ALLOW)
    assert caught.value.param == "grader.passing_labels"
