"""Run every benchmark and write ``docs/benchmarks.md``.

    make bench                                   # full sizes (about 20-30 minutes on 2 cores)
    .venv/bin/python -m tests.bench.run_all --only pipeline --jobs 100 --merge   # a smaller pipeline run
    .venv/bin/python -m tests.bench.run_all --quick   # smaller sizes (or TUNELINE_BENCH_QUICK=1)
    .venv/bin/python -m tests.bench.run_all --only upload --out -   # one benchmark, to stdout
    .venv/bin/python -m tests.bench.run_all --only pipeline --jobs 1000 --merge
        # one benchmark; its section replaces the same section of docs/benchmarks.md

Everything runs on 127.0.0.1 against private processes (its own redis-server on a free port,
its own gunicorns); nothing is asserted on timings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.bench import datasets, job_get, pipeline, ray_bench, train_bench, upload, webhooks
from tests.bench.common import Options, machine
from tests.support.procs import REPO

BENCHMARKS: dict[str, Callable[[Options], str]] = {
    "upload": upload.run,
    "job_get": job_get.run,
    "datasets": datasets.run,
    "pipeline": pipeline.run,
    "webhooks": webhooks.run,
    "train": train_bench.run,
    "ray": ray_bench.run,
}
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"


def header(command: str, quick: bool, ran: list[str], seconds: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Reproduce with `make bench` (full sizes, about 20-30 minutes) or "
            "`.venv/bin/python -m tests.bench.run_all --quick` (smaller sizes; also "
            "`TUNELINE_BENCH_QUICK=1`). The harness lives in `tests/bench/` (one module per benchmark); "
            "each benchmark starts its own redis-server on a free port and its own gunicorn processes, "
            "and sends traffic only to 127.0.0.1.",
            "",
            "These machines are small and shared, so absolute numbers wander between runs: read the "
            "**ratios**, each measured side by side in the same run, and the **medians** of repeated runs. "
            "No test asserts on any of these timings.",
            "",
            f"- Date: {now}",
            f"- Machine: {machine()}",
            f"- Command: `{command}`" + (" (quick sizes)" if quick else ""),
            f"- Benchmarks: {', '.join(ran)}; total wall time {seconds:.0f} s",
            "",
        ]
    )


def section_key(section: str) -> str:
    """A section's identity: its ``## `` title up to the first ':' or '(' (sizes may differ)."""
    title = section.lstrip().splitlines()[0]
    return title.split(":")[0].split("(")[0].strip()


def merge(path: Path, sections: list[str], note: str) -> str:
    """The existing document with these sections replaced (or appended) and a dated note added
    to its header, so one benchmark can be rerun without rerunning the others."""
    old = path.read_text(encoding="utf-8") if path.exists() else header("make bench", False, [], 0.0)
    head, _, rest = old.partition("\n## ")
    parts = [("## " + p).rstrip() + "\n" for p in rest.split("\n## ")] if rest else []
    for section in sections:
        key = section_key(section)
        at = next((i for i, p in enumerate(parts) if section_key(p) == key), None)
        if at is None:
            parts.append(section.rstrip() + "\n")
        else:
            parts[at] = section.rstrip() + "\n"
    return head.rstrip() + "\n" + note + "\n\n" + "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tuneline benchmarks")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("TUNELINE_BENCH_QUICK", "") not in ("", "0"),
        help="smaller sizes and shorter runs (also TUNELINE_BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="markdown file to write ('-' for stdout only); default docs/benchmarks.md "
        "when every benchmark runs, stdout only with --only",
    )
    parser.add_argument("--jobs", type=int, default=None, help="job count of the pipeline benchmark")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the sections that ran in docs/benchmarks.md (or --out), keep the others",
    )
    args = parser.parse_args(argv)
    if args.jobs:
        os.environ["TUNELINE_BENCH_JOBS"] = str(args.jobs)
    names = args.only or list(BENCHMARKS)
    out = args.out or ("-" if args.only and not args.merge else str(DEFAULT_OUT))
    command = (
        "make bench"
        if os.environ.get("MAKELEVEL") and argv is None and sys.argv[1:] == []
        else shlex.join(
            [
                Path(sys.executable).relative_to(REPO).as_posix()
                if Path(sys.executable).is_relative_to(REPO)
                else sys.executable,
                "-m",
                "tests.bench.run_all",
                *sys.argv[1:],
            ]
        )
    )
    sections: list[str] = []
    failed = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(
        prefix="tuneline-bench-", dir=REPO / "var" if (REPO / "var").is_dir() else None
    ) as tmp:
        opts = Options(quick=args.quick, workdir=Path(tmp))
        for name in names:
            t = time.monotonic()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                section = BENCHMARKS[name](opts)
            except Exception:  # report the failure, run the others
                failed += 1
                section = f"## {name}: FAILED\n\n```\n{traceback.format_exc()[-3000:]}```\n"
            print(f"[bench] {name} done in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
            print(section, flush=True)
            sections.append(section)
    doc = header(command, args.quick, names, time.monotonic() - started) + "\n" + "\n".join(sections)
    if args.merge and out != "-":
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        note = (
            f"- Updated {now}: `{command}` reran {', '.join(names)} "
            f"({time.monotonic() - started:.0f} s; machine load average "
            f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)"
        )
        doc = merge(Path(out), sections, note)
    if out != "-":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(doc, encoding="utf-8")
        print(f"[bench] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
