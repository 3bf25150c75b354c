"""The ray executor on this machine: tokens/s of 1 vs 2 Ray Train workers, and what the Ray path
costs against the process executor on the same job (issue 17, docs/ray.md).

    .venv/bin/python -m tests.bench.ray_bench [--quick] [--runs 3]
    .venv/bin/python -m tests.bench.run_all --only ray --merge

One local Ray head (``tests/support/ray.py``, as many CPUs as the machine has) runs the same
SPEC.json several ways, in turn so that load on the shared machine hits all alike: the process
executor's child (``python -m service.training.run``, 1 torch thread), one Ray worker (1 CPU,
1 thread, batch 8: the same job on the Ray path), two Ray workers (1 CPU and 1 thread each,
batch 4 each: the same global batch, DDP over gloo, both cores), and the child with 2 threads
(both cores in one process). tokens/s = training tokens seen / wall time of ``trainer.train()`` on rank
0; wall = start of the child (or Ray submit) to its exit (or the Ray job's SUCCEEDED as the Jobs
API reports it, polled every 0.5 s), which adds model loading, Ray's driver and worker start-up,
and saving.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.common import Options, machine, median
from tests.support.procs import REPO
from tests.support.ray import RayHead
from tests.support.training import subset, training_env, write_spec

SAMPLE_DATA = REPO / "tests" / "data"


@dataclass(frozen=True)
class Way:
    label: str
    ray_workers: int  # 0: the process executor's child
    batch_size: int  # per worker
    threads: int  # torch threads per worker (and CPUs Ray gives it)


# The first is the baseline. One thread per process: on this shared 2-core machine a second
# thread in one process stalls at every barrier when another engineer's work takes a core (the
# last row shows it), which would drown the comparison.
WAYS = (
    Way("process executor (1 child, 1 thread, batch 8)", 0, 8, 1),
    Way("ray, 1 worker (1 CPU, 1 thread, batch 8)", 1, 8, 1),
    Way("ray, 2 workers (1 CPU, 1 thread, batch 4 each)", 2, 4, 1),
    Way("process executor (1 child, 2 threads, batch 8)", 0, 8, 2),
)


def spec_for(way: Way, model: Path, data: Path, steps: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return write_spec(
        out / "SPEC.json",
        job_id=f"ftjob-bench-{out.name}",
        base_model=str(model),
        method="full",
        train_file=str(data),
        validation_file=None,
        output_dir=str(out / "out"),
        resume=False,
        hyperparameters={
            "n_epochs": 1000,
            "max_steps": steps,
            "batch_size": way.batch_size,
            "learning_rate": 3e-3,
            "checkpoint_every": 10**6,
            "seed": 1,
        },
        device="cpu",
        threads=way.threads,
    )


def finished_of(messages: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    done = [m for m in messages if m["type"] == "finished"]
    if not done:
        raise RuntimeError(f"the run did not finish: {messages[-1:]}")
    return {
        "tokens": done[0]["trained_tokens"],
        "tokens_per_s": done[0]["trained_tokens"] / done[0]["train_runtime_s"],
        "steps": done[0]["steps"],
        "wall_s": wall,
    }


def run_process(spec: Path, threads: int) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "service.training.run", "--spec", str(spec)],
        cwd=REPO,
        env=training_env(threads),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return finished_of([json.loads(x) for x in proc.stdout.splitlines() if x.strip()], wall)


def run_ray(head: RayHead, spec: Path, way: Way, storage: Path, index: int) -> dict[str, Any]:
    from service.core.ray_jobs import RayCompute, RayJobs, RayRun, entrypoint, submission_id

    jobs = RayJobs(head.address)
    sid = submission_id(f"bench-{spec.parent.name}", index)
    compute = RayCompute(
        num_workers=way.ray_workers,
        cpus_per_worker=way.threads,
        storage=str(storage),
        python=sys.executable,
        resource_wait_s=0,
    )
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(way.threads), "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    jobs.submit(sid, entrypoint(str(spec), compute), env=env, metadata={"bench": "ray"})
    run = RayRun(jobs, sid)
    messages: list[dict[str, Any]] = []
    while True:
        progress = run.poll()
        messages += progress.messages
        if progress.ray_status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    if progress.ray_status != "SUCCEEDED":
        raise RuntimeError(f"ray run {sid} ended {progress.ray_status}: {jobs.logs(sid)[-2000:]}")
    return finished_of(messages, wall)


def measure(workdir: Path, quick: bool, runs: int) -> tuple[dict[str, list[dict[str, Any]]], int, str]:
    from service.training.demo import build_demo

    model = workdir / "tiny"
    build_demo(model, SAMPLE_DATA / "funds_qa.jsonl")
    data = subset(SAMPLE_DATA / "funds_qa.jsonl", workdir / "data.jsonl", 0, 512)
    steps = 40 if quick else 100
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    head = RayHead(workdir / "ray-head.log", num_cpus=os.cpu_count() or 2).start(training_env())
    results: dict[str, list[dict[str, Any]]] = {way.label: [] for way in WAYS}
    try:
        for index in range(runs):
            for number, way in enumerate(WAYS):
                out = workdir / f"way{number}-run{index}"  # also names the Ray Train run: never resumed
                spec = spec_for(way, model, data, steps, out)
                result = (
                    run_process(spec, way.threads)
                    if way.ray_workers == 0
                    else run_ray(head, spec, way, workdir / "ray-storage", index)
                )
                results[way.label].append(result)
                print(
                    f"[ray] run {index + 1} {way.label}: {result['tokens_per_s']:.0f} tok/s, "
                    f"wall {result['wall_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        head.stop()
    load = f"{load_before} before, {' / '.join(f'{x:.1f}' for x in os.getloadavg())} after"
    return results, steps, load


def section(opts: Options, runs: int = 3) -> str:
    os.environ["HF_HUB_OFFLINE"] = "1"
    results, steps, load = measure(opts.workdir, opts.quick, runs)
    base = WAYS[0].label
    base_tps = median(r["tokens_per_s"] for r in results[base])
    base_wall = median(r["wall_s"] for r in results[base])
    lines = [
        "## Ray executor: 1 vs 2 Ray workers, and the Ray path vs the process executor (issue 17)",
        "",
        f"The tiny demo model, full fine-tuning, {steps} steps of a global batch of 8 prompt/completion "
        "lines of `funds_qa.jsonl`, CPU, one local Ray head with all of the machine's CPUs "
        "(`tests/bench/ray_bench.py`), one torch thread per process unless said. "
        "tokens/s = training tokens / wall time of `trainer.train()` "
        "on rank 0; wall = child start (or Ray submit) to its end as the caller sees it: model "
        "loading, Ray's driver and workers starting, saving. Ratios are against the process "
        "executor measured in the same rounds.",
        "",
        "| way | tokens/s | vs process | wall s | vs process |",
        "|---|---|---|---|---|",
    ]
    for way in WAYS:
        rows = results[way.label]
        tps = median(r["tokens_per_s"] for r in rows)
        wall = median(r["wall_s"] for r in rows)
        lines.append(
            f"| {way.label} | {tps:.0f} | **{tps / base_tps:.2f}** "
            f"| {wall:.1f} | **{wall / base_wall:.2f}** |"
        )
    lines += [
        "",
        f"Medians of {runs} rounds (each round runs the {len(WAYS)} ways in turn). Per-run tokens/s: "
        + "; ".join(
            f"{way.label}: " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in results[way.label])
            for way in WAYS
        )
        + ". Per-run wall s: "
        + "; ".join(
            f"{way.label}: " + ", ".join(f"{r['wall_s']:.1f}" for r in results[way.label]) for way in WAYS
        )
        + f". Load average (1/5/15 min): {load}.",
        "",
    ]
    return "\n".join(lines)


def run(opts: Options) -> str:
    return section(opts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"[ray] {machine()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tuneline-ray-bench-") as tmp:
        print(section(Options(quick=args.quick, workdir=Path(tmp)), args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
