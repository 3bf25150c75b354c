"""Benchmark: Tuneline's dataset preparation vs a bare tiktoken loop vs the classic prepare_data tool.

Usage: .venv/bin/python tests/bench/datasets_bench.py [--lines 100000] [--runs 3]
       [--model davinci-002] [--memory-gb 1.0]

Issue 15's measurement: 100,000 unique English prompt/completion rows; each run of each contender
is a fresh process, and the contenders take turns run by run (side by side, same machine load).
Rows:
- `tuneline prepare FILE --model M --out DIR`, the whole process as a user runs it (interpreter
  start, CLI imports, both passes, the written splits);
- the engine in-process: `prepare_file(...)` with `out_dir`, timed inside its process (no start-up
  or import time), so an engine change is visible apart from the CLI's start-up;
- the bare floor: one process that loads the model's vocabulary, reads the file (orjson) and counts
  every prompt and completion with tiktoken's `encode_ordinary`, one text after another; its
  whole-process time and, separately, the loop alone;
- the classic `openai tools fine_tunes.prepare_data -f FILE -q` (openai 0.28.1), whole process,
  when `.venv-legacy` exists (`python3 -m venv .venv-legacy && .venv-legacy/bin/pip install
  'openai[datalib]==0.28.1'`).
With --memory-gb, the peak RSS of `tuneline prepare` on a file of that size (same row shape).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LEGACY = ROOT / ".venv-legacy" / "bin" / "openai"

WORDS = [
    *("fund", "index", "bond", "equity", "market", "risk", "return", "yield", "portfolio"),
    *("allocation", "rebalance", "dividend", "volatility", "inflation", "rate", "growth", "value"),
    *("sector", "emerging", "developed", "currency", "hedge", "cost", "fee", "tax", "account"),
    *("saving", "retirement", "horizon", "monthly", "invest", "buy", "sell", "hold", "position", "cash"),
]

# Runs one command as its only child and reports its wall time, exit status and peak RSS.
MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
dt = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
out, err = (x.decode(errors="replace")[-400:] for x in (p.stdout, p.stderr))
print(json.dumps({"s": dt, "cpu": u.ru_utime + u.ru_stime, "rc": p.returncode, "rss": u.ru_maxrss,
                  "out": out, "err": err}))
"""

ENGINE = """
import json, sys, time
from pathlib import Path
from service.core.datasets import PrepareOptions, prepare_file
t = time.perf_counter()
r = prepare_file(Path(sys.argv[1]), PrepareOptions(model=sys.argv[2]), out_dir=Path(sys.argv[3]))
print(json.dumps({"inner": time.perf_counter() - t, "kept": r.counts["kept"], "tokens": r.tokens["total"]}))
"""

BARE = """
import json, sys, time
import orjson
from service.core.datasets import MODELS, get_encoding
t = time.perf_counter()
encode = get_encoding(MODELS[sys.argv[2]].encoding).encode_ordinary
n = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        row = orjson.loads(line)
        n += len(encode(row["prompt"])) + len(encode(row["completion"]))
print(json.dumps({"inner": time.perf_counter() - t, "tokens": n}))
"""


def generate(path: Path, lines: int, seed: int = 1) -> None:
    """Unique English prompt/completion rows (each prompt carries its row number)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            prompt = f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(8, 30))) + "?"
            completion = " ".join(rng.choices(WORDS, k=rng.randint(15, 80))).capitalize() + "."
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")


def measure(*cmd: str, cwd: Path = ROOT) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], cwd=cwd, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    inner = str(result["out"]).strip().splitlines()
    if inner and inner[-1].startswith("{"):
        with contextlib.suppress(ValueError):
            result.update(json.loads(inner[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="davinci-002")
    parser.add_argument("--memory-gb", type=float, default=0.0, help="also peak RSS on a file this big")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tuneline-bench-"))
    try:
        src = work / "bench.jsonl"
        generate(src, args.lines)
        size_mb = src.stat().st_size / 1e6
        tuneline = str(BIN / "tuneline")
        runs: dict[str, list[dict[str, object]]] = {"cli": [], "engine": [], "bare": [], "legacy": []}
        for i in range(args.runs):
            out = work / f"out{i}"
            runs["cli"].append(
                measure(tuneline, "prepare", str(src), "--model", args.model, "--out", str(out))
            )
            shutil.rmtree(out, ignore_errors=True)
            runs["engine"].append(measure(sys.executable, "-c", ENGINE, str(src), args.model, str(out)))
            shutil.rmtree(out, ignore_errors=True)
            runs["bare"].append(measure(sys.executable, "-c", BARE, str(src), args.model))
            if LEGACY.exists():
                legacy_dir = work / f"legacy{i}"
                legacy_dir.mkdir()
                copy = legacy_dir / src.name
                shutil.copy(src, copy)  # the tool writes its output beside its input
                runs["legacy"].append(
                    measure(str(LEGACY), "tools", "fine_tunes.prepare_data", "-f", str(copy), "-q")
                )
                shutil.rmtree(legacy_dir, ignore_errors=True)
        for name, results in runs.items():
            for r in results:
                if r["rc"] not in (0,):
                    sys.exit(f"{name} failed (exit {r['rc']}): {r['err'] or r['out']}")

        def med(name: str, key: str = "s") -> float:
            return statistics.median(float(r[key]) for r in runs[name])  # type: ignore[arg-type]

        def spread(name: str, key: str = "s") -> str:
            return "–".join(f"{v:.2f}" for v in sorted(float(r[key]) for r in runs[name]))  # type: ignore[arg-type]

        def rss(name: str) -> float:
            return max(int(r["rss"]) for r in runs[name]) / 1024  # type: ignore[call-overload]

        cli, engine, bare, bare_loop = med("cli"), med("engine", "inner"), med("bare"), med("bare", "inner")
        python = sys.executable.removeprefix(str(ROOT) + "/")
        print(f"File: {args.lines} unique rows, {size_mb:.1f} MB, model {args.model}; median of {args.runs}")
        print(
            f"Command: `{python} tests/bench/datasets_bench.py --lines {args.lines} --runs {args.runs} "
            f"--model {args.model}" + (f" --memory-gb {args.memory_gb}" if args.memory_gb else "") + "`"
        )
        print()
        legacy = med("legacy") if runs["legacy"] else 0.0
        print(
            "| what | median wall s (runs) | wall ratio | median CPU s (user+sys, all threads) "
            "| CPU ratio | peak RSS MB |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        rows = [
            (
                f"`tuneline prepare FILE --model {args.model} --out DIR`, whole process",
                "cli",
                "s",
                cli / bare,
            ),
            ("bare floor, whole process (start, vocabulary, read, encode loop)", "bare", "s", 1.0),
            (
                "engine in-process: `prepare_file` with `out_dir` (no start-up, no imports)",
                "engine",
                "inner",
                engine / bare_loop,
            ),
            ("bare in-process (vocabulary load, read, encode loop; no start-up)", "bare", "inner", 1.0),
        ]
        if runs["legacy"]:
            rows.append(
                (
                    "classic `openai tools fine_tunes.prepare_data -f FILE -q` (0.28.1), whole process",
                    "legacy",
                    "s",
                    legacy / bare,
                )
            )
        for title, name, key, ratio in rows:
            whole = key == "s"  # CPU and memory are per process: shown on the whole-process rows
            cpu = f"{med(name, 'cpu'):.2f}" if whole else ""
            cpu_ratio = f"{med(name, 'cpu') / med('bare', 'cpu'):.2f}×" if whole else ""
            memory = f"{rss(name):.0f}" if whole else ""
            print(
                f"| {title} | {med(name, key):.2f} ({spread(name, key)}) | {ratio:.2f}× | {cpu} "
                f"| {cpu_ratio} | {memory} |"
            )
        if not runs["legacy"]:
            print("| classic tool | not run: `.venv-legacy` missing | | | | |")
        print()
        print(
            "Wall ratios are to the bare floor of the same kind (whole process, or in-process); CPU "
            "ratios to the bare floor's whole process."
            + (
                f" The classic tool takes {legacy / cli:.2f}× the wall time of `tuneline prepare` and "
                f"{med('legacy', 'cpu') / med('cli', 'cpu'):.2f}× its CPU time."
                if runs["legacy"]
                else ""
            )
        )
        if args.memory_gb:
            big = work / "big.jsonl"
            rows = int(args.lines * args.memory_gb * 1e9 / src.stat().st_size)
            src.unlink()
            generate(big, rows, seed=2)
            r = measure(tuneline, "prepare", str(big), "--model", args.model, "--out", str(work / "big-out"))
            shutil.rmtree(work / "big-out", ignore_errors=True)
            e = measure(sys.executable, "-c", ENGINE, str(big), args.model, str(work / "big-out"))
            print()
            print(
                f"Peak memory on a {big.stat().st_size / 1e9:.2f} GB file ({rows} rows, model {args.model}, "
                f"splits written): `tuneline prepare` {int(r['rss']) / 1024:.0f} MB peak RSS "  # type: ignore[call-overload]
                f"(exit {r['rc']}, {float(r['s']):.0f} s wall, {float(r['cpu']):.0f} s CPU); the engine "  # type: ignore[arg-type]
                f"in-process {int(e['rss']) / 1024:.0f} MB ({float(e['s']):.0f} s wall)."  # type: ignore[call-overload, arg-type]
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
