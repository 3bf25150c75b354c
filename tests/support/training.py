"""Helpers for tests of the local trainer: the tiny demo model, data subsets, the training child."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import REPO, base_env

TORCH_MISSING = "the train extra (torch, transformers, peft, trl) is not installed: pip install -e '.[train]'"


def training_env(threads: int = 1) -> dict[str, str]:
    """Environment of a training child: offline hubs, few threads (the machine is shared)."""
    return base_env(
        {
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(threads),
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        }
    )


def subset(source: Path, out: Path, start: int, count: int) -> Path:
    """Lines ``start .. start + count`` of a JSONL file, written to ``out``."""
    lines = source.read_text(encoding="utf-8").splitlines()[start : start + count]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def preference_pairs(source: Path, out: Path, start: int, count: int, shift: int = 7) -> Path:
    """OpenAI preference rows from prompt/completion lines ``start .. start + count``: the row's
    own answer preferred, the answer of the row ``shift`` further on (cyclically) not, or of the
    next one after it whose answer differs (the sample's answers are templated: some repeat)."""
    rows = [
        json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()[start : start + count]
    ]
    with out.open("w", encoding="utf-8") as handle:
        for index, current in enumerate(rows):
            others = (rows[(index + shift + k) % len(rows)] for k in range(len(rows)))
            other = next(o for o in others if o["completion"] != current["completion"])
            record = {
                "input": {"messages": [{"role": "user", "content": current["prompt"]}]},
                "preferred_output": [{"role": "assistant", "content": current["completion"]}],
                "non_preferred_output": [{"role": "assistant", "content": other["completion"]}],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


# The reinforcement tests' answer format: answers that mention this word score 1. The tiny model's
# sampled answers contain it now and then (about one in eight at four tokens), its greedy answers
# never: what GRPO can learn, and what the base never does.
KEYWORD = "黄金"
KEYWORD_GRADER = {
    "type": "string_check",
    "name": "mentions the keyword",
    "input": "{{sample.output_text}}",
    "reference": "{{item.keyword}}",
    "operation": "like",
}


def reinforcement_rows(source: Path, out: Path, start: int, count: int, keyword: str = KEYWORD) -> Path:
    """OpenAI reinforcement rows from the prompts of lines ``start .. start + count``: the user's
    question, and the field the grader reads (``keyword``)."""
    with out.open("w", encoding="utf-8") as handle:
        for line in source.read_text(encoding="utf-8").splitlines()[start : start + count]:
            record = {
                "messages": [{"role": "user", "content": json.loads(line)["prompt"]}],
                "keyword": keyword,
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


def write_spec(path: Path, **fields: Any) -> Path:
    path.write_text(json.dumps(fields, default=str), encoding="utf-8")
    return path


def child_spec(folder: Path, name: str, base: Path | str, train: Path, **fields: Any) -> Path:
    """``folder/name.json`` for a CPU run on one thread with output in ``folder/name``; ``fields``
    override the defaults (``hyperparameters`` replaces them whole)."""
    values: dict[str, Any] = {
        "job_id": f"ftjob-{name}",
        "base_model": str(base),
        "train_file": str(train),
        "output_dir": str(folder / name),
        "hyperparameters": {"n_epochs": 1, "batch_size": 8, "checkpoint_every": 10, "seed": 1},
        "device": "cpu",
        "threads": 1,
        **fields,
    }
    return write_spec(folder / f"{name}.json", **values)


@dataclass
class ChildRun:
    """A finished (or killed) training child: its protocol lines, exit code and log."""

    lines: list[dict[str, Any]]
    returncode: int | None
    log: str
    raw: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == kind]

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of("error")
        return errors[-1] if errors else None


@dataclass
class TrainedRun:
    """A child run that finished, and where its outputs are."""

    run: ChildRun
    output_dir: Path

    @property
    def model_dir(self) -> Path:
        return self.output_dir / "model"


def train_to_end(spec: Path, log: Path) -> TrainedRun:
    run = run_child(spec, log)
    assert run.returncode == 0 and run.of("finished"), run.log
    return TrainedRun(run, Path(json.loads(spec.read_text(encoding="utf-8"))["output_dir"]))


class Child:
    """``python -m service.training.run --spec`` with stdout read line by line."""

    def __init__(self, spec: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_path = log
        self.raw: list[str] = []
        self.lines: list[dict[str, Any]] = []
        self._log = open(log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.training.run", "--spec", str(spec)],
            cwd=REPO,
            env=dict(env or training_env()),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            encoding="utf-8",
        )

    def next_line(self) -> dict[str, Any] | None:
        """The next protocol line; ``None`` at end of output. Anything that is not a JSON object
        fails the test: stdout carries only the protocol."""
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            return None
        self.raw.append(text)
        line = json.loads(text)
        assert isinstance(line, dict) and "type" in line, text
        self.lines.append(line)
        return line

    def read_until(self, predicate: Any) -> dict[str, Any]:
        while (line := self.next_line()) is not None:
            if predicate(line):
                return line
        raise AssertionError(
            f"child ended before the expected line; last lines {self.raw[-3:]}\n{self.read_log()}"
        )

    def read_log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def finish(self, timeout: float = 600) -> ChildRun:
        while self.next_line() is not None:
            pass
        returncode = self.proc.wait(timeout=timeout)
        self._log.close()
        return ChildRun(self.lines, returncode, self.read_log(), self.raw)

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        started = time.monotonic()
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None, time.monotonic() - started
        finally:
            self._log.close()
        return returncode, time.monotonic() - started


def run_child(spec: Path, log: Path, env: Mapping[str, str] | None = None, timeout: float = 600) -> ChildRun:
    return Child(spec, log, env).finish(timeout)
