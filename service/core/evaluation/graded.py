"""Reinforcement's held-out evaluation: the job's grader scores each answer (``grader_score``, DESIGN §9).

The test split holds OpenAI's reinforcement rows (``messages`` ending on a user turn, plus the
fields the grader reads); each is answered greedily by the fine-tuned model and by its base, as
for the other methods, and scored with the job's grader (``{{sample.output_text}}`` is the answer,
``{{item.*}}`` the row). The summary's ``grader_score`` is the mean score, 0-1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.errors import TunelineError
from service.core.evaluation.stage import Example, Scoring
from service.core.graders import run
from service.core.graders.usecases import reward_context, reward_grader
from service.core.jobs.record import Job
from service.settings import Settings

DEFAULT_MAX_TOKENS = 256  # the trainer's default max_completion_length


@dataclass(frozen=True)
class GradedExample(Example):
    """A test row to answer, and the row itself: the grader's ``item``."""

    item: dict[str, Any] | None = None


def applies(job: Job) -> bool:
    return (job.method or {}).get("type") == "reinforcement"


def load_rows(path: Path) -> list[Example]:
    """The prepared test split's reinforcement rows, in file order."""
    out: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not messages:
                continue
            last = messages[-1].get("content") if isinstance(messages[-1], dict) else None
            shown = last if isinstance(last, str) else json.dumps(last, ensure_ascii=False)
            out.append(GradedExample(len(out), messages, None, shown, "", item=row))
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Examples, answered, errors, and the mean ``grader_score`` (0-1) over the answered rows."""
    answered = [r for r in rows if r.get("answer") is not None]
    scores = [float(r.get("grader_score") or 0.0) for r in answered]
    return {
        "examples": len(rows),
        "answered": len(answered),
        "errors": len(rows) - len(answered),
        "grader_score": round(sum(scores) / len(scores), 4) if scores else 0.0,
    }


def scoring(settings: Settings, job: Job) -> Scoring:
    """How a reinforcement job's test rows are answered and scored: at most the run's
    ``max_completion_length`` tokens each, scored by its grader."""
    reinforcement = (job.method or {}).get("reinforcement") or {}
    grader = reward_grader(settings, reinforcement.get("grader"))
    ctx = reward_context(settings)
    hyper = {**job.hyperparameters, **(reinforcement.get("hyperparameters") or {})}
    length = hyper.get("max_completion_length")
    max_tokens = length if isinstance(length, int) and not isinstance(length, bool) else DEFAULT_MAX_TOKENS

    def score(answer: str, example: Example) -> dict[str, Any]:
        item = example.item if isinstance(example, GradedExample) else None
        try:
            graded = run.grade(grader, answer, item, ctx)
        except TunelineError as exc:  # the answer is not what a template needs: no credit
            return {"grader_score": 0.0, "grader_error": exc.message}
        out: dict[str, Any] = {"grader_score": round(graded.reward, 4)}
        if graded.sub_rewards:
            out["sub_rewards"] = graded.sub_rewards
        return out

    return Scoring(
        load=lambda path, stop: load_rows(path),
        max_tokens=lambda example: max_tokens,
        score=score,
        summarize=summarize,
        headline=lambda summary: f"grader_score {summary['grader_score']}",
    )
