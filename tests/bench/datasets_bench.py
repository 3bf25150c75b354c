"""Benchmark: Tuneline's dataset preparation vs the classic prepare_data tool vs bare tokenization.

Usage: .venv/bin/python bench/datasets_bench.py [--lines 100000] [--runs 3] [--model babbage-002]

Each measurement runs in a fresh subprocess (so peak RSS is per run); the table reports the median
wall time of the runs. The classic tool runs only when `.venv-legacy` exists (create it with
`python3 -m venv .venv-legacy && .venv-legacy/bin/pip install 'openai[datalib]==0.28.1'`).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / ".venv-legacy" / "bin" / "openai"

WORDS = [
    "fund",
    "index",
    "bond",
    "equity",
    "market",
    "risk",
    "return",
    "yield",
    "portfolio",
    "allocation",
    "rebalance",
    "dividend",
    "volatility",
    "inflation",
    "rate",
    "growth",
    "value",
    "sector",
    "emerging",
    "developed",
    "currency",
    "hedge",
    "cost",
    "fee",
    "tax",
    "account",
    "saving",
    "retirement",
    "horizon",
    "monthly",
    "invest",
    "buy",
    "sell",
    "hold",
    "position",
    "cash",
]

TUNELINE = """
import json, resource, sys, time
from pathlib import Path
from service.core.datasets import PrepareOptions, prepare_file
t = time.perf_counter()
out = Path(sys.argv[3]) if len(sys.argv) > 3 else None
r = prepare_file(Path(sys.argv[1]), PrepareOptions(model=sys.argv[2]), out_dir=out)
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "kept": r.counts["kept"], "tokens": r.tokens["total"]}))
"""

BARE = """
import json, resource, sys, time
from service.core.datasets import MODELS, get_encoding
texts = []
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        row = json.loads(line)
        texts.append(row["prompt"]); texts.append(row["completion"])
enc = get_encoding(MODELS[sys.argv[2]].encoding)
encode = enc.encode_ordinary
t = time.perf_counter()
n = sum(len(encode(x)) for x in texts)
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "tokens": n}))
"""


def generate(path: Path, lines: int, seed: int = 1) -> None:
    """English prompt/completion rows with a few duplicates, like real exports."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        prev = ""
        for i in range(lines):
            if i and rng.random() < 0.01:
                f.write(prev)
                continue
            prompt = f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(8, 30))) + "?"
            completion = " ".join(rng.choices(WORDS, k=rng.randint(15, 80))).capitalize() + "."
            prev = json.dumps({"prompt": prompt, "completion": completion}) + "\n"
            f.write(prev)


def _child(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _legacy(src: Path) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="legacy-"))
    try:
        copy = work / src.name
        shutil.copy(src, copy)
        cmd = (
            "import resource,subprocess,sys,time,json;t=time.perf_counter();"
            "p=subprocess.run(sys.argv[1:],capture_output=True);dt=time.perf_counter()-t;"
            "print(json.dumps({'s':dt,'rc':p.returncode,"
            "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
        )
        args = [str(LEGACY), "tools", "fine_tunes.prepare_data", "-f", str(copy), "-q"]
        return _child(cmd, *args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="babbage-002")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tuneline-bench-"))
    src = work / "bench.jsonl"
    generate(src, args.lines)
    size_mb = src.stat().st_size / 1e6
    results: dict[str, list[dict[str, float]]] = {"tuneline": [], "write": [], "bare": [], "legacy": []}
    for i in range(args.runs):
        results["tuneline"].append(_child(TUNELINE, str(src), args.model))
        results["write"].append(_child(TUNELINE, str(src), args.model, str(work / f"out{i}")))
        results["bare"].append(_child(BARE, str(src), args.model))
        if LEGACY.exists():
            results["legacy"].append(_legacy(src))

    def med(name: str) -> float:
        return statistics.median(r["s"] for r in results[name])

    def rss(name: str) -> float:
        return max(r["rss"] for r in results[name]) / 1024

    t_tl, t_bare = med("tuneline"), med("bare")
    print(f"File: {args.lines} lines, {size_mb:.1f} MB, model {args.model}, median of {args.runs}")
    print(f"Command: {sys.executable} bench/datasets_bench.py --lines {args.lines} --runs {args.runs}")
    print()
    print("| what | median s | vs Tuneline | peak RSS MB |")
    print("|---|---:|---:|---:|")
    print(
        "| Tuneline full preparation (all checks + token counts, report) | "
        f"{t_tl:.2f} | 1.00× | {rss('tuneline'):.0f} |"
    )
    t_write = med("write")
    print(
        f"| Tuneline preparation + writing prepared JSONL (second pass) | {t_write:.2f} | "
        f"{t_write / t_tl:.2f}× | {rss('write'):.0f} |"
    )
    print(
        f"| bare tiktoken tokenization of the same texts | {t_bare:.2f} | "
        f"{t_tl / t_bare:.2f}× slower (Tuneline / bare) | {rss('bare'):.0f} |"
    )
    if results["legacy"]:
        t_legacy = med("legacy")
        rcs = {int(r.get("rc", 0)) for r in results["legacy"]}
        print(
            f"| classic `openai tools fine_tunes.prepare_data -q` (0.28.1, exit {sorted(rcs)}) | "
            f"{t_legacy:.2f} | {t_legacy / t_tl:.1f}× slower than Tuneline | {rss('legacy'):.0f} |"
        )
    else:
        print("| classic tool | not run: .venv-legacy missing | | |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
