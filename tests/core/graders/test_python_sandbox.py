"""The python grader's sandbox: limits, no network, no secrets, and the caller keeps going."""

from __future__ import annotations

import os
import socket

import pytest

from service.core.graders import run, spec
from service.core.graders.sandbox import PythonLimits, run_python

LIMITS = PythonLimits(timeout_s=1.5, memory_bytes=256 * 1024**2)
SAMPLE = {"output_text": "42", "output_json": 42}


def outcome(source: str, item: object = None):
    return run_python(source, SAMPLE, item or {"answer": "42"}, LIMITS)


def test_grade_gets_sample_and_item_and_may_print():
    result = outcome(
        "def grade(sample, item):\n"
        "    print('debug output never counts as the result')\n"
        "    return 1.0 if sample['output_text'] == item['answer'] and sample['output_json'] == 42 else 0.0\n"
    )
    assert (result.score, result.error) == (1.0, None)


def test_an_exception_is_reported_with_its_traceback():
    result = outcome("def grade(sample, item):\n    return item['missing']\n")
    assert result.score is None and result.error == "runtime_error"
    assert "KeyError: 'missing'" in (result.details or "")


def test_a_non_number_is_reported():
    result = outcome("def grade(sample, item):\n    return 'yes'\n")
    assert result.error == "runtime_error" and "must return a number" in (result.details or "")


def test_an_endless_loop_is_stopped():
    result = outcome("def grade(sample, item):\n    while True:\n        pass\n")
    assert result.score is None and result.error in ("timeout", "cpu_limit")


def test_sleeping_past_the_wall_clock_limit_is_stopped():
    result = outcome("import time\ndef grade(sample, item):\n    time.sleep(60)\n    return 1\n")
    assert result.error == "timeout" and "1.5 s" in (result.details or "")


def test_allocating_10_gb_is_refused():
    result = outcome("def grade(sample, item):\n    block = bytearray(10 * 1024**3)\n    return 1\n")
    assert result.score is None and result.error == "memory_limit"
    assert "256 MB" in (result.details or "")


def test_no_network_connection_can_be_opened():
    # A real listener on this host's loopback: reachable from here, not from the grader's namespace.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = outcome(
            "import socket\n"
            "def grade(sample, item):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    return 1.0\n"
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    assert result.score is None and result.error == "runtime_error"
    assert "OSError" in (result.details or "")


def test_the_environment_holds_no_secrets(monkeypatch):
    monkeypatch.setenv("TUNELINE_SECRET_KEY", "must-not-leak")
    result = outcome(
        "import os\ndef grade(sample, item):\n    return float(any('SECRET' in k for k in os.environ))\n"
    )
    assert result.score == 0.0
    assert os.environ["TUNELINE_SECRET_KEY"] == "must-not-leak"


def test_a_forked_child_does_not_outlive_the_run():
    result = outcome(
        "import os, time\n"
        "def grade(sample, item):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    return 0.5\n"
    )
    assert result.score == 0.5


def test_grading_goes_on_after_a_grader_was_stopped():
    grader = spec.parse(
        {
            "type": "python",
            "name": "loop",
            "source": "def grade(sample, item):\n    while True:\n        pass\n",
        },
        spec.Policy(python_enabled=True),
    )
    ctx = run.Context(python_limits=LIMITS)
    stopped = run.run(grader, "x", {}, ctx)
    assert stopped["reward"] == 0.0 and stopped["metadata"]["errors"]["python_grader_runtime_error"]
    good = spec.parse(
        {"type": "python", "name": "ok", "source": "def grade(sample, item):\n    return 0.25\n"},
        spec.Policy(python_enabled=True),
    )
    assert run.run(good, "x", {}, ctx)["reward"] == pytest.approx(0.25)


def test_openai_guides_python_example_matches_the_fuzzy_match_metric():
    # The python grader from OpenAI's graders guide, a re-implementation of fuzzy_match.
    source = (
        "from rapidfuzz import fuzz, utils\n"
        "\n"
        "def grade(sample, item) -> float:\n"
        "    output_text = sample['output_text']\n"
        "    reference_answer = item['reference_answer']\n"
        "    return fuzz.WRatio(output_text, reference_answer, processor=utils.default_process) / 100.0\n"
    )
    item = {"reference_answer": "The capital of France is Paris"}
    limits = PythonLimits(timeout_s=10, memory_bytes=512 * 1024**2)
    python = run_python(source, {"output_text": "paris is the capital of france"}, item, limits)
    builtin = run.grade(
        spec.parse(
            {
                "type": "text_similarity",
                "name": "fuzzy",
                "evaluation_metric": "fuzzy_match",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference_answer}}",
            },
            spec.Policy(),
        ),
        "paris is the capital of france",
        item,
        run.Context(),
    )
    assert python.error is None and python.score == pytest.approx(builtin.reward)
    assert 0 < builtin.reward < 1
