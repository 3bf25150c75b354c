"""Training throughput: a job through Tuneline's training child vs the same training in a plain
``trl`` script (tests/bench/plain_trl.py): same model, data, hyperparameters, threads, same run.

    .venv/bin/python -m tests.bench.train_bench [--quick] [--runs 3]
    .venv/bin/python -m tests.bench.run_all --only train

Runs alternate (Tuneline, plain, Tuneline, plain, ...) so that load on the shared machine hits
both alike; the table reports medians. tokens/s = tokens of the training data seen (tokens per
epoch x epochs done, identical tokenization on both sides) / wall time of ``trainer.train()``.
Tuneline's time includes what the engine adds inside training: per-step protocol lines and the
final checkpoint (with its completion marker); model loading and data preparation are outside on
both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.common import Options, machine, median
from tests.support.procs import REPO
from tests.support.training import subset, training_env, write_spec

SAMPLE_DATA = REPO / "tests" / "data"


@dataclass(frozen=True)
class Setup:
    """One comparison: which model, how much data, which hyperparameters."""

    label: str
    model: Path
    data: Path
    method: str
    batch_size: int
    max_steps: int
    learning_rate: float
    threads: int
    device: str = "cpu"
    max_length: int = 2048


def run_engine(setup: Setup, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = write_spec(
        workdir / "spec.json",
        job_id="ftjob-bench",
        base_model=str(setup.model),
        method=setup.method,
        train_file=str(setup.data),
        validation_file=None,
        output_dir=str(workdir / "out"),
        resume=False,
        hyperparameters={
            "n_epochs": 1000,
            "max_steps": setup.max_steps,
            "batch_size": setup.batch_size,
            "learning_rate": setup.learning_rate,
            "max_seq_length": setup.max_length,
            "checkpoint_every": 10**6,
        },
        device=setup.device,
        threads=setup.threads,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "service.training.run", "--spec", str(spec)],
        cwd=REPO,
        env=training_env(setup.threads),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    finished = [line for line in lines if line["type"] == "finished"]
    if proc.returncode != 0 or not finished:
        raise RuntimeError(f"engine run failed ({proc.returncode}): {lines[-1:]} {proc.stderr[-2000:]}")
    done = finished[0]
    return {
        "tokens": done["trained_tokens"],
        "train_runtime_s": done["train_runtime_s"],
        "tokens_per_s": done["trained_tokens"] / done["train_runtime_s"],
        "steps": done["steps"],
        "peak_gpu_memory_bytes": done.get("peak_gpu_memory_bytes"),
    }


def run_plain(setup: Setup) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "tests.bench.plain_trl",
        "--model",
        str(setup.model),
        "--data",
        str(setup.data),
        "--method",
        setup.method,
        "--epochs",
        "1000",
        "--max-steps",
        str(setup.max_steps),
        "--batch-size",
        str(setup.batch_size),
        "--learning-rate",
        str(setup.learning_rate),
        "--max-length",
        str(setup.max_length),
        "--threads",
        str(setup.threads),
        "--device",
        setup.device,
    ]
    proc = subprocess.run(
        args, cwd=REPO, env=training_env(setup.threads), capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"plain trl run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def compare(setup: Setup, runs: int, workdir: Path) -> dict[str, Any]:
    engine: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    for index in range(runs):
        engine.append(run_engine(setup, workdir / f"engine-{index}"))
        plain.append(run_plain(setup))
        print(
            f"[train] {setup.label} run {index + 1}: tuneline {engine[-1]['tokens_per_s']:.0f} tok/s, "
            f"plain trl {plain[-1]['tokens_per_s']:.0f} tok/s",
            file=sys.stderr,
            flush=True,
        )
    ours = median(r["tokens_per_s"] for r in engine)
    theirs = median(r["tokens_per_s"] for r in plain)
    peaks = [r["peak_gpu_memory_bytes"] for r in engine + plain if r.get("peak_gpu_memory_bytes")]
    return {
        "setup": setup,
        "engine": engine,
        "plain": plain,
        "engine_tps": ours,
        "plain_tps": theirs,
        "ratio": ours / theirs,
        "engine_peak": max((r["peak_gpu_memory_bytes"] or 0) for r in engine) if peaks else None,
        "plain_peak": max((r["peak_gpu_memory_bytes"] or 0) for r in plain) if peaks else None,
    }


def table(results: list[dict[str, Any]], runs: int) -> list[str]:
    gpu = any(r["engine_peak"] for r in results)
    head = "| setup | steps | tokens per run (Tuneline / plain) | Tuneline tok/s | plain trl tok/s | ratio |"
    rule = "|---|---|---|---|---|---|"
    if gpu:
        head += " peak GPU memory (Tuneline / plain) |"
        rule += "---|"
    lines = [head, rule]
    for r in results:
        s: Setup = r["setup"]
        tokens = f"{r['engine'][0]['tokens']} / {r['plain'][0]['tokens']}"
        line = (
            f"| {s.label} | {r['engine'][0]['steps']} | {tokens} "
            f"| {r['engine_tps']:.0f} | {r['plain_tps']:.0f} | **{r['ratio']:.2f}** |"
        )
        if gpu:
            line += f" {r['engine_peak'] / 2**30:.2f} GiB / {r['plain_peak'] / 2**30:.2f} GiB |"
        lines.append(line)
    lines.append("")
    lines.append(
        f"Medians of {runs} alternating runs each. Per-run tokens/s: "
        + "; ".join(
            f"{r['setup'].label}: Tuneline "
            + ", ".join(f"{x['tokens_per_s']:.0f}" for x in r["engine"])
            + " / plain "
            + ", ".join(f"{x['tokens_per_s']:.0f}" for x in r["plain"])
            for r in results
        )
        + "."
    )
    return lines


def tiny_setup(workdir: Path, quick: bool) -> Setup:
    from service.training.demo import build_demo

    model = workdir / "tiny"
    build_demo(model, SAMPLE_DATA / "funds_qa.jsonl")
    data = subset(SAMPLE_DATA / "funds_qa.jsonl", workdir / "tiny.jsonl", 0, 512)
    return Setup(
        "tiny demo model (290k params), full fine-tuning, batch 8",
        model,
        data,
        "full",
        8,
        60 if quick else 200,
        3e-3,
        threads=2,
    )


def smollm2_setup(workdir: Path, quick: bool) -> Setup:
    from service.training.models import SMOLLM2_ALIAS, cached_source, load_base, resolve

    cache = workdir / "model-cache"
    load_base(SMOLLM2_ALIAS, cache)  # the dense copy of the GGUF, loaded identically by both sides
    model = Path(cached_source(resolve(SMOLLM2_ALIAS), cache).location)
    data = subset(SAMPLE_DATA / "funds_qa.jsonl", workdir / "smollm2.jsonl", 0, 64)
    return Setup(
        "SmolLM2-135M, LoRA r16 all-linear, batch 4",
        model,
        data,
        "lora",
        4,
        4 if quick else 8,
        2e-4,
        threads=2,
    )


def section(opts: Options, runs: int = 3) -> str:
    os.environ["HF_HUB_OFFLINE"] = "1"
    setups = [tiny_setup(opts.workdir, opts.quick), smollm2_setup(opts.workdir, opts.quick)]
    results = [compare(s, runs, opts.workdir / f"setup-{i}") for i, s in enumerate(setups)]
    return "\n".join(
        [
            "## Training throughput: Tuneline's trainer vs a plain trl script (issue 6)",
            "",
            "Same model, data (prompt/completion lines of `funds_qa.jsonl`), hyperparameters and "
            "2 torch threads on both sides, CPU. Tuneline = `python -m service.training.run --spec` "
            "(per-step protocol lines, final checkpoint with completion marker); plain = "
            "`tests/bench/plain_trl.py` (`load_dataset` + `SFTTrainer`, no saves during training). "
            "tokens/s = training tokens seen / wall time of `trainer.train()`. Goal: ratio >= 0.9.",
            "",
            *table(results, runs),
            "",
            "On a GPU machine: `python -m tests.bench.gpu_train_bench` (Qwen2-0.5B-sized config with "
            "random weights; reports tokens/s, peak GPU memory and the ratio).",
            "",
        ]
    )


def run(opts: Options) -> str:
    return section(opts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneline-train-bench-") as tmp:
        print(f"Machine: {machine()}\n")
        print(section(Options(quick=args.quick, workdir=Path(tmp)), runs=args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
