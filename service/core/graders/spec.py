"""OpenAI's grader JSON read into typed graders, every problem named by its dotted path.

Shapes follow the official SDK's ``openai.types.graders``: ``string_check``, ``text_similarity``,
``python``, ``score_model``, ``label_model`` and ``multi`` (whose ``graders`` is a map of name to
grader, as OpenAI's guide writes it; a single grader object there is taken as a map of one, keyed by
its ``name``). A body that does not fit is an InvalidRequest (400); a grader that fits but that
this deployment will not run (python graders switched off, METEOR, a judge model Tuneline cannot
serve) is an Unprocessable (422). Both carry ``param`` = the dotted path from the request root.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from service.core.errors import InvalidRequest, Unprocessable
from service.core.graders import sandbox, similarity, templates
from service.core.graders.formula import Formula, compile_formula
from service.core.graders.templates import Where

OPERATIONS = ("eq", "ne", "like", "ilike")
ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
MAX_NAME = 256
MAX_MULTI = 32


@dataclass(frozen=True)
class StringCheck:
    type: ClassVar[str] = "string_check"
    name: str
    input: str
    reference: str
    operation: str


@dataclass(frozen=True)
class TextSimilarity:
    type: ClassVar[str] = "text_similarity"
    name: str
    input: str
    reference: str
    evaluation_metric: str


@dataclass(frozen=True)
class Python:
    type: ClassVar[str] = "python"
    name: str
    source: str


@dataclass(frozen=True)
class Message:
    role: str
    content: str  # text parts joined; templates still in it


@dataclass(frozen=True)
class ScoreModel:
    type: ClassVar[str] = "score_model"
    name: str
    model: str
    input: tuple[Message, ...]
    range: tuple[float, float]
    max_tokens: int | None
    temperature: float | None


@dataclass(frozen=True)
class LabelModel:
    type: ClassVar[str] = "label_model"
    name: str
    model: str
    input: tuple[Message, ...]
    labels: tuple[str, ...]
    passing_labels: tuple[str, ...]


@dataclass(frozen=True)
class Multi:
    type: ClassVar[str] = "multi"
    name: str
    graders: dict[str, Grader]
    formula: Formula


Grader = StringCheck | TextSimilarity | Python | ScoreModel | LabelModel | Multi
ModelCheck = Callable[[str, str], None]  # (model, param) -> None, raising when it cannot judge


@dataclass(frozen=True)
class Policy:
    """What this deployment allows: python graders (a setting) and which judge models it serves."""

    python_enabled: bool = False
    check_model: ModelCheck | None = None  # None: model graders are refused
    # Read a grader that was accepted before (a job's, at preparation) for its shape and templates
    # only: whether it can run here now (python switched on, a judge that serves) is not asked.
    templates_only: bool = False


def _bad(where: Where, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"{where.param}: {message}", param=where.param, code=code)


def _refused(where: Where, message: str, code: str) -> Unprocessable:
    return Unprocessable(f"{where.param}: {message}", param=where.param, code=code)


def _fields(
    raw: Mapping[str, Any], where: Where, required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    for key in required:
        if key not in raw or raw[key] is None:
            raise InvalidRequest(
                f"Missing required parameter: '{where.child(key).param}'.",
                param=where.child(key).param,
                code="missing_required_parameter",
            )
    for key in raw:
        if key not in required and key not in optional and key != "type":
            raise InvalidRequest(
                f"Unknown parameter: '{where.child(key).param}'.",
                param=where.child(key).param,
                code="unknown_parameter",
            )


def _string(raw: Mapping[str, Any], key: str, where: Where, *, template: bool = False) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise _bad(where.child(key), "must be a string")
    if template:
        templates.check(value, where.child(key))
    return value


def _name(raw: Mapping[str, Any], where: Where) -> str:
    name = _string(raw, "name", where)
    if not name.strip() or len(name) > MAX_NAME:
        raise _bad(where.child("name"), f"must be 1-{MAX_NAME} characters")
    return name


def parse(raw: Any, policy: Policy, root: str = "grader") -> Grader:
    """The grader in ``raw`` (OpenAI's JSON), checked; errors name ``root.<path>``."""
    return _parse(raw, policy, Where("", root), nested=False)


def _parse(raw: Any, policy: Policy, where: Where, nested: bool) -> Grader:
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f"{where.param}: must be a grader object", param=where.param, code="invalid_type"
        )
    kind = raw.get("type")
    parsers: dict[str, Callable[[dict[str, Any], Policy, Where], Grader]] = {
        "string_check": _string_check,
        "text_similarity": _text_similarity,
        "python": _python,
        "score_model": _score_model,
        "label_model": _label_model,
        "multi": _multi,
    }
    if kind not in parsers:
        raise _bad(where.child("type"), f"must be one of {', '.join(parsers)}", code="invalid_grader_type")
    if kind == "multi" and nested:
        raise _bad(where.child("type"), "a multi grader cannot contain another multi grader")
    return parsers[kind](raw, policy, where)


def _string_check(raw: dict[str, Any], policy: Policy, where: Where) -> Grader:
    _fields(raw, where, ("name", "input", "reference", "operation"), ())
    operation = raw["operation"]
    if operation not in OPERATIONS:
        raise _bad(where.child("operation"), f"must be one of {', '.join(OPERATIONS)}")
    return StringCheck(
        name=_name(raw, where),
        input=_string(raw, "input", where, template=True),
        reference=_string(raw, "reference", where, template=True),
        operation=operation,
    )


def _text_similarity(raw: dict[str, Any], policy: Policy, where: Where) -> Grader:
    # pass_threshold belongs to the evals flavour of this grader; accepted, it does not change a score.
    _fields(raw, where, ("name", "input", "reference", "evaluation_metric"), ("pass_threshold",))
    metric = raw["evaluation_metric"]
    if metric not in similarity.METRICS:
        raise _bad(where.child("evaluation_metric"), f"must be one of {', '.join(similarity.METRICS)}")
    if metric in similarity.UNSUPPORTED:
        raise _refused(
            where.child("evaluation_metric"),
            f"'{metric}' is not available in Tuneline: {similarity.UNSUPPORTED[metric]}. "
            "Use fuzzy_match, bleu, gleu or rouge_1…rouge_5/rouge_l.",
            "unsupported_metric",
        )
    if "pass_threshold" in raw and not _is_number(raw["pass_threshold"]):
        raise _bad(where.child("pass_threshold"), "must be a number")
    return TextSimilarity(
        name=_name(raw, where),
        input=_string(raw, "input", where, template=True),
        reference=_string(raw, "reference", where, template=True),
        evaluation_metric=metric,
    )


def _python(raw: dict[str, Any], policy: Policy, where: Where) -> Grader:
    _fields(raw, where, ("name", "source"), ("image_tag", "pass_threshold"))
    name, source = _name(raw, where), _string(raw, "source", where)
    if policy.templates_only:
        return Python(name=name, source=source)
    if not policy.python_enabled:
        raise _refused(
            where.child("type"),
            "python graders are switched off on this Tuneline (the operator enables them with "
            "TUNELINE_PYTHON_GRADER_ENABLED=true)",
            "python_grader_disabled",
        )
    problem = sandbox.check_source(source)
    if problem:
        raise _bad(where.child("source"), problem, code="invalid_python_grader")
    try:
        sandbox.isolation_prefix()
    except sandbox.SandboxUnavailable as exc:
        raise _refused(where.child("type"), str(exc), "python_grader_unavailable") from None
    return Python(name=name, source=source)


def _messages(raw: dict[str, Any], where: Where) -> tuple[Message, ...]:
    items = raw["input"]
    if not isinstance(items, list) or not items:
        raise _bad(where.child("input"), "must be a non-empty list of messages")
    out: list[Message] = []
    for index, message in enumerate(items):
        at = where.child(f"input.{index}")
        if not isinstance(message, dict):
            raise _bad(at, "must be a message object")
        _fields(message, at, ("role", "content"), ())
        if message["role"] not in ROLES:
            raise _bad(at.child("role"), f"must be one of {', '.join(ROLES)}")
        if message.get("type", "message") != "message":
            raise _bad(at.child("type"), "must be 'message'")
        content = _content(message["content"], at.child("content"))
        templates.check(content, at.child("content"))
        out.append(Message(role=message["role"], content=content))
    return tuple(out)


def _content(content: Any, where: Where) -> str:
    """The text of a message: a string, a text part, or a list of them (images and audio refused)."""
    parts = content if isinstance(content, list) else [content]
    texts: list[str] = []
    for index, part in enumerate(parts):
        at = where.child(str(index)) if isinstance(content, list) else where
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and isinstance(part.get("type"), str):
            raise _refused(
                at.child("type"),
                f"'{part['type']}' content is not supported: Tuneline's judges read text only",
                "unsupported_content",
            )
        else:
            raise _bad(at, "must be a string or a text part {type: input_text, text}")
    return "".join(texts)


def _model(raw: dict[str, Any], policy: Policy, where: Where) -> str:
    model = _string(raw, "model", where)
    if policy.templates_only:
        return model
    if policy.check_model is None:
        raise _refused(
            where.child("model"),
            "model graders need a Tuneline model to judge, and none can serve here",
            "judge_unavailable",
        )
    policy.check_model(model, where.child("model").param)
    return model


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _score_model(raw: dict[str, Any], policy: Policy, where: Where) -> Grader:
    _fields(raw, where, ("name", "model", "input"), ("range", "sampling_params", "pass_threshold"))
    name, messages = _name(raw, where), _messages(raw, where)
    bounds = raw.get("range") or [0, 1]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)) or not (
        bounds[0] < bounds[1]
    ):
        raise _bad(where.child("range"), "must be two numbers [low, high] with low < high")
    sampling = raw.get("sampling_params") or {}
    if not isinstance(sampling, dict):
        raise _bad(where.child("sampling_params"), "must be an object")
    max_tokens = sampling.get("max_completions_tokens")
    if max_tokens is not None and not (isinstance(max_tokens, int) and 1 <= max_tokens <= 32768):
        raise _bad(where.child("sampling_params.max_completions_tokens"), "must be an integer 1-32768")
    temperature = sampling.get("temperature")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 2):
        raise _bad(where.child("sampling_params.temperature"), "must be a number 0-2")
    return ScoreModel(
        name=name,
        model=_model(raw, policy, where),
        input=messages,
        range=(float(bounds[0]), float(bounds[1])),
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
    )


def _label_model(raw: dict[str, Any], policy: Policy, where: Where) -> Grader:
    _fields(raw, where, ("name", "model", "input", "labels", "passing_labels"), ())
    name, messages = _name(raw, where), _messages(raw, where)
    labels, passing = raw["labels"], raw["passing_labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x for x in labels)):
        raise _bad(where.child("labels"), "must be a non-empty list of non-empty strings")
    if not (isinstance(passing, list) and passing and all(isinstance(x, str) for x in passing)):
        raise _bad(where.child("passing_labels"), "must be a non-empty list of strings")
    outside = [x for x in passing if x not in labels]
    if outside:
        raise _bad(where.child("passing_labels"), f"{outside[0]!r} is not one of labels")
    return LabelModel(
        name=name,
        model=_model(raw, policy, where),
        input=messages,
        labels=tuple(labels),
        passing_labels=tuple(passing),
    )


def _multi(raw: dict[str, Any], policy: Policy, where: Where) -> Grader:
    _fields(raw, where, ("name", "graders", "calculate_output"), ())
    name, children = _name(raw, where), raw["graders"]
    if isinstance(children, dict) and isinstance(children.get("type"), str):
        children = {str(children.get("name") or "grader"): children}  # the SDK's single-grader form
    if not isinstance(children, dict) or not children or len(children) > MAX_MULTI:
        raise _bad(where.child("graders"), f"must map 1-{MAX_MULTI} names to graders")
    graders: dict[str, Grader] = {}
    for key, child in children.items():
        if not key.isidentifier():
            raise _bad(where.child(f"graders.{key}"), "a grader's key must be a name usable in the formula")
        graders[key] = _parse(child, policy, where.child(f"graders.{key}"), nested=True)
    formula_text = _string(raw, "calculate_output", where)
    formula = compile_formula(formula_text, set(graders), where.child("calculate_output").param)
    return Multi(name=name, graders=graders, formula=formula)
