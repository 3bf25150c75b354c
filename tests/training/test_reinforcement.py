"""Reinforcement (GRPO) through the training child on the tiny model: the grader is the reward,
GRPO's figures per step and in result.csv, and a format the base never produces learned, as the
held-out grader score shows against the base."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.training import KEYWORD, KEYWORD_GRADER, TORCH_MISSING, child_spec, train_to_end

pytest.importorskip("torch", reason=TORCH_MISSING)

from service.core.jobs.metrics import reinforcement_columns
from service.training.errors import EXAMPLE_TOO_LONG, INVALID_TRAINING_FILE, TrainingError
from service.training.reinforcement import evaluate_grader, grader_reward, load_prompts, parse_grader

ANSWER_TOKENS = 4
# Settled over seeds 1-6 (docs/local-trainer.md, "Reinforcement"): full fine-tuning at a high rate
# moves the tiny model's greedy answer onto the keyword within 40 steps; the KL term is kept small.
LEARNING = {
    "max_steps": 40,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "max_completion_length": ANSWER_TOKENS,
    "beta": 0.01,
    "checkpoint_every": 20,
    "seed": 1,
}
FIGURES = ("reward_mean", "reward_std", "completion_length", "kl")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_grpo_learns_a_format_the_base_never_produces(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = child_spec(
        tmp_path,
        "grpo",
        tiny_model,
        data_dir / "rl_train.jsonl",
        method="reinforcement",
        training_type="full",
        grader=KEYWORD_GRADER,
        validation_file=str(data_dir / "rl_valid.jsonl"),
        hyperparameters=LEARNING,
    )
    trained = train_to_end(spec, tmp_path / "child.log")
    run = trained.run
    started = run.of("started")[0]
    assert started["train_examples"] == 32 and started["total_steps"] == 40

    metrics = run.of("metrics")
    assert [m["step"] for m in metrics] == list(range(1, 41))
    for m in metrics:
        assert 0 <= m["train_reward_mean"] <= 1 and m["train_reward_std"] >= 0
        assert 0 < m["train_completion_length"] <= ANSWER_TOKENS
        assert m["train_kl"] is not None and m["train_kl"] >= 0
    assert metrics[0]["train_kl"] == 0  # the first step's policy is its reference
    # The sampled answers mention the keyword more often as training goes on.
    rewards = [m["train_reward_mean"] for m in metrics]
    assert _mean(rewards[-10:]) > _mean(rewards[:10])
    evaluated = [m for m in metrics if m["valid_reward_mean"] is not None]
    assert [m["step"] for m in evaluated] == [20, 40]

    finished = run.of("finished")[0]
    assert 0 <= finished["full_valid_reward_mean"] <= 1
    with (trained.output_dir / "result.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == reinforcement_columns()
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert float(rows[19]["valid_reward_mean"]) == evaluated[0]["valid_reward_mean"]
    meta = json.loads((trained.model_dir / "tuneline-model.json").read_text(encoding="utf-8"))
    assert (meta["method"], meta["training_type"]) == ("reinforcement", "full")

    test_rows = data_dir / "rl_test.jsonl"  # held out: prompts the run never saw
    base = evaluate_grader(str(tiny_model), test_rows, KEYWORD_GRADER, max_tokens=ANSWER_TOKENS, device="cpu")
    model = evaluate_grader(
        str(trained.model_dir), test_rows, KEYWORD_GRADER, max_tokens=ANSWER_TOKENS, device="cpu"
    )
    assert base.examples == model.examples == 16
    assert base.grader_score == 0  # the base's greedy answers never mention the keyword
    assert model.grader_score > base.grader_score


@pytest.mark.slow
def test_multi_grader_scores_per_grader_and_lora_defaults(
    tiny_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    grader = {
        "type": "multi",
        "name": "keyword and length",
        "graders": {
            "keyword": KEYWORD_GRADER,
            "similar": {
                "type": "text_similarity",
                "name": "close to the keyword",
                "input": "{{sample.output_text}}",
                "reference": "{{item.keyword}}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "0.5 * keyword + 0.5 * similar",
    }
    spec = child_spec(
        tmp_path,
        "multi",
        tiny_model,
        data_dir / "rl_train.jsonl",
        method="reinforcement",
        grader=grader,
        hyperparameters={"max_steps": 2, "batch_size": 4, "max_completion_length": ANSWER_TOKENS, "seed": 2},
    )
    trained = train_to_end(spec, tmp_path / "child.log")
    metrics = trained.run.of("metrics")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        parts = m["train_grader_keyword"], m["train_grader_similar"]
        assert all(0 <= p <= 1 for p in parts)
        # Every answer's reward is the formula over its two scores, so the means follow it too.
        assert m["train_reward_mean"] == pytest.approx(0.5 * parts[0] + 0.5 * parts[1], abs=1e-5)
        assert m["train_kl"] is not None  # the default KL coefficient (0.04) keeps a reference
    with (trained.output_dir / "result.csv").open(encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == reinforcement_columns(("keyword", "similar"))
    assert (trained.model_dir / "adapter_config.json").is_file()  # LoRA, the default


def test_the_reward_is_the_graders_score_per_answer() -> None:
    grader, ctx = parse_grader(
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "kw": KEYWORD_GRADER,
                "json": {**KEYWORD_GRADER, "input": "{{sample.output_json.a}}"},
            },
            "calculate_output": "kw + json",
        },
        None,
    )
    logged: dict[str, float] = {}
    reward = grader_reward(grader, ctx)
    item = json.dumps({"keyword": KEYWORD}, ensure_ascii=False)
    answers = [
        [{"role": "assistant", "content": f"买{KEYWORD}"}],
        [{"role": "assistant", "content": "买债券"}],
        [{"role": "assistant", "content": json.dumps({"a": KEYWORD}, ensure_ascii=False)}],
    ]
    rewards = reward(completions=answers, item=[item] * 3, log_metric=logged.__setitem__)
    # An answer the grader cannot read (output_json of plain text) scores 0 rather than failing.
    assert rewards == [0.0, 0.0, 2.0]
    assert logged == {"grader/kw": 1.0, "grader/json": 1.0}  # means over the answers it could score


def test_the_grader_names_what_it_cannot_run_in_the_trainer() -> None:
    judge = {
        "type": "score_model",
        "name": "j",
        "model": "ft:x",
        "input": [{"role": "user", "content": "hi"}],
    }
    with pytest.raises(TrainingError, match=r"method\.reinforcement\.grader\.model"):
        parse_grader(judge, None)
    with pytest.raises(TrainingError, match="python graders are switched off"):
        parse_grader({"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1\n"}, None)


def _rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "code", "fragment"),
    [
        (
            {"messages": [{"role": "user", "content": "问"}]},
            INVALID_TRAINING_FILE,
            "field `keyword` is missing",
        ),
        (
            {
                "messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}],
                "keyword": "x",
            },
            INVALID_TRAINING_FILE,
            "must end on a user message",
        ),
        (
            {"messages": [{"role": "user", "content": "问" * 1000}], "keyword": "x"},
            EXAMPLE_TOO_LONG,
            "prompt",
        ),
    ],
)
def test_rows_the_grader_cannot_score_name_their_line(
    tiny_model: Path, tmp_path: Path, bad: dict[str, Any], code: str, fragment: str
) -> None:
    from service.training.models import ModelSource, load_tokenizer

    tokenizer = load_tokenizer(ModelSource(str(tiny_model), str(tiny_model)))
    grader, _ = parse_grader(KEYWORD_GRADER, None)
    good = {"messages": [{"role": "user", "content": "消费现在还能买吗"}], "keyword": KEYWORD}
    path = _rows(tmp_path / "rows.jsonl", [good, good, bad])
    with pytest.raises(TrainingError) as caught:
        load_prompts(path, tokenizer, 512, 16, grader, "training file")
    assert caught.value.code == code
    assert "line 3 of the training file" in caught.value.message and fragment in caught.value.message
    assert len(load_prompts(_rows(tmp_path / "ok.jsonl", [good]), tokenizer, 512, 16, grader, "t")) == 1
