"""What each training method's held-out evaluation reads and adds (DESIGN §9, §12).

Every method is evaluated by generation: the model answers each test prompt greedily and the
answer is scored against the row's reference (``metrics``: exact match, char F1, ROUGE-L, BLEU).
A method's evaluator says which test rows it takes and how they read (prompt, reference), and
may add per-row scores and summary figures of its own. The evaluating stage picks one by the
job's ``method.type`` (``for_method``); a new method adds a class here and one entry in
``EVALUATORS``.

- ``supervised`` (``Evaluator``): chat or prompt/completion rows, generation metrics only.
- ``reinforcement`` (``Graded``): OpenAI's reinforcement rows (``messages`` ending on a user
  turn, plus the fields the grader reads); each answer is scored by the job's grader
  (``{{sample.output_text}}`` the answer, ``{{item.*}}`` the row), no reference metrics; the
  summary's ``grader_score`` is the mean score, 0-1, against the base's.
- ``dpo`` (``Preference``): OpenAI's preference rows; generation metrics against the preferred
  output, plus ``preference_accuracy``: the share of pairs whose preferred output the model gives
  a strictly higher log-probability than the non-preferred one (``metrics.preference_accuracy``).
  It is always compared with the model the job started from (its ``baseline``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from service.core.backends.base import BackendError, ScoreRequest, ScoreResult
from service.core.datasets.checks import CHAT, PREFERENCE, PROMPT_COMPLETION, REINFORCEMENT
from service.core.errors import TunelineError
from service.core.evaluation import metrics
from service.core.graders import run
from service.core.graders.usecases import reward_context, reward_grader
from service.core.jobs.record import Job
from service.settings import Settings


@dataclass(frozen=True)
class Example:
    """One test row as the model is asked it: chat ``messages`` or a text ``prompt``."""

    index: int
    messages: list[dict[str, Any]] | None
    prompt: str | None
    shown: str  # what a person reads as the question
    reference: str
    source: dict[str, Any] = field(default_factory=dict)  # the prepared test row
    fields: dict[str, Any] = field(default_factory=dict)  # shown on each of its evaluated rows


# Asks the evaluated model (or its baseline) for the log-probabilities of given replies; raises
# BackendError or a TunelineError when it cannot (retryable errors already retried).
Score = Callable[[ScoreRequest], ScoreResult]


def content(message: Any) -> str:
    """A message's text (OpenAI content parts joined)."""
    value = message.get("content") if isinstance(message, dict) else None
    if isinstance(value, list):
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return value if isinstance(value, str) else ""


def _last_user(messages: list[Any]) -> str:
    users = (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user")
    return next((content(m) for m in users), "")


class Evaluator:
    """``supervised`` and the default: chat rows (the last assistant message is the reference) or
    prompt/completion rows; generation metrics only."""

    method: ClassVar[str] = "supervised"
    test_formats: ClassVar[tuple[str, ...]] = (PROMPT_COMPLETION, CHAT)
    test_rows: ClassVar[str] = "prompt/completion or chat rows whose last message is the reference"
    # True: the baseline is part of the method's result, so a job evaluates the model it started
    # from even where nobody asked (an experiment still evaluates one baseline per base model).
    compares_base: ClassVar[bool] = False
    # True: ``score`` needs log-probabilities of given replies (``Backend.score``).
    needs_scores: ClassVar[bool] = False
    # The summary figures ``summarize`` adds (their names are fixed: DESIGN §9).
    summary_names: ClassVar[tuple[str, ...]] = ()
    # True: each answer is scored against the row's reference (exact match, char F1, ROUGE-L, BLEU).
    reference_metrics: ClassVar[bool] = True

    def bind(self, settings: Settings, job: Job) -> Evaluator:
        """The evaluator for one job (a method whose scoring depends on the job returns a new one)."""
        return self

    def max_tokens(self, example: Example) -> int:
        """Room for an answer twice the reference's length (a CJK character is about one token or
        less), so a model that never stops (an untrained base) cannot stall the evaluation."""
        return 2 * len(example.reference) + 16

    def example(self, index: int, row: dict[str, Any], stop: str | None) -> Example | None:
        if isinstance(row.get("messages"), list):
            messages = row["messages"]
            last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
            if last < 1:
                return None
            asked = messages[:last]
            return Example(index, asked, None, _last_user(asked), content(messages[last]), row)
        if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            reference = row["completion"]
            if stop and reference.endswith(stop):
                reference = reference[: -len(stop)]
            return Example(index, None, row["prompt"], row["prompt"], reference.strip(), row)
        return None

    def score(self, example: Example, row: dict[str, Any], score: Score | None) -> dict[str, Any]:
        """Fields this method adds to an evaluated row (``row`` holds the answer and its metrics)."""
        return {}

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Figures this method adds to a target's summary, from its evaluated rows."""
        return {}


class Preference(Evaluator):
    """``dpo``: preference rows; the generation metrics score the answer against the preferred
    output, and each pair is scored by log-probability (``preferred_logprob``,
    ``non_preferred_logprob``: summed over the output's tokens and its end-of-turn token, given
    the prompt, as DPO trains them)."""

    method = "dpo"
    test_formats = (PREFERENCE,)
    test_rows = "preference rows (input.messages, preferred_output, non_preferred_output)"
    compares_base = True
    needs_scores = True
    summary_names = ("preference_accuracy", "preference_margin")

    def example(self, index: int, row: dict[str, Any], stop: str | None) -> Example | None:
        given = row.get("input")
        asked = given.get("messages") if isinstance(given, dict) else None
        preferred, other = row.get("preferred_output"), row.get("non_preferred_output")
        if not (isinstance(asked, list) and asked):
            return None
        if not (isinstance(preferred, list) and preferred and isinstance(other, list) and other):
            return None
        fields = {"non_preferred": content(other[0])}
        return Example(index, asked, None, _last_user(asked), content(preferred[0]), row, fields)

    def score(self, example: Example, row: dict[str, Any], score: Score | None) -> dict[str, Any]:
        if score is None:
            return {}
        source = example.source
        request = ScoreRequest(
            messages=list(example.messages or []),
            replies=[source["preferred_output"], source["non_preferred_output"]],
        )
        try:
            result = score(request)
        except (BackendError, TunelineError) as exc:
            return {"preference_error": {"code": exc.code, "message": exc.message}}
        preferred, other = result.logprobs
        return {"preferred_logprob": preferred, "non_preferred_logprob": other}

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """``preference_accuracy`` and ``preference_margin`` (mean log p(preferred) - log
        p(non-preferred), nats) over the scored pairs (``preference_pairs``); None when none was."""
        margins = [
            r["preferred_logprob"] - r["non_preferred_logprob"]
            for r in rows
            if r.get("preferred_logprob") is not None and r.get("non_preferred_logprob") is not None
        ]
        accuracy = metrics.preference_accuracy(margins)
        return {
            "preference_accuracy": None if accuracy is None else round(accuracy, 4),
            "preference_margin": round(sum(margins) / len(margins), 4) if margins else None,
            "preference_pairs": len(margins),
        }


class Graded(Evaluator):
    """``reinforcement``: each held-out answer scored by the job's grader (``grader_score`` per
    row, ``sub_rewards`` for a ``multi`` grader); the model is compared with its base."""

    method = "reinforcement"
    test_formats = (REINFORCEMENT,)
    test_rows = "reinforcement rows (messages ending on a user turn, plus the fields the grader reads)"
    compares_base = True
    summary_names = ("grader_score",)
    reference_metrics = False
    DEFAULT_MAX_TOKENS: ClassVar[int] = 256  # the trainer's default max_completion_length

    def __init__(self, grader: Any = None, context: run.Context | None = None, tokens: int = 0) -> None:
        self.grader = grader
        self.context = context
        self.tokens = tokens or self.DEFAULT_MAX_TOKENS

    def bind(self, settings: Settings, job: Job) -> Evaluator:
        """At most the run's ``max_completion_length`` tokens per answer, scored by its grader."""
        reinforcement = (job.method or {}).get("reinforcement") or {}
        hyper = {**job.hyperparameters, **(reinforcement.get("hyperparameters") or {})}
        length = hyper.get("max_completion_length")
        tokens = length if isinstance(length, int) and not isinstance(length, bool) else 0
        grader = reward_grader(settings, reinforcement.get("grader"))
        return Graded(grader, reward_context(settings), tokens)

    def example(self, index: int, row: dict[str, Any], stop: str | None) -> Example | None:
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return None
        last = messages[-1].get("content")
        shown = last if isinstance(last, str) else json.dumps(last, ensure_ascii=False)
        return Example(index, messages, None, shown, "", row)

    def max_tokens(self, example: Example) -> int:
        return self.tokens

    def score(self, example: Example, row: dict[str, Any], score: Score | None) -> dict[str, Any]:
        answer = row.get("answer")
        if answer is None or self.grader is None or self.context is None:
            return {}
        try:
            graded = run.grade(self.grader, answer, example.source, self.context)
        except TunelineError as exc:  # the answer is not what a template needs: no credit
            return {"grader_score": 0.0, "grader_error": exc.message}
        out: dict[str, Any] = {"grader_score": round(graded.reward, 4)}
        if graded.sub_rewards:
            out["sub_rewards"] = graded.sub_rewards
        return out

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The mean ``grader_score`` (0-1) over the answered rows."""
        scores = [float(r.get("grader_score") or 0.0) for r in rows if r.get("answer") is not None]
        return {"grader_score": round(sum(scores) / len(scores), 4) if scores else 0.0}


SUPERVISED = Evaluator()
EVALUATORS: dict[str, Evaluator] = {"supervised": SUPERVISED, "dpo": Preference(), "reinforcement": Graded()}


def for_method(method: dict[str, Any] | None) -> Evaluator:
    """The evaluator of a job's (or a create request's) ``method``; supervised when none is given."""
    kind = (method or {}).get("type") or "supervised"
    return EVALUATORS.get(str(kind), SUPERVISED)
