"""OpenAI's grader templates: ``{{ item.field }}`` and ``{{ sample.output_text }}`` rendered from one sample.

A template variable is ``namespace.path``: the namespace is ``item`` (the dataset row) or ``sample``
(the model's answer), the path is dotted keys with optional ``[n]`` list indices, JSON-path style
(``{{ item.answers[0].text }}``). Strings are inserted as they are; other JSON values as compact JSON
(UTF-8, never ``\\uXXXX``-escaped). A variable that is not there is an error naming where the
template is (``graders.correct.reference``) and which variable is missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from service.core.errors import InvalidRequest, Unprocessable

VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
# What Tuneline can fill in the sample namespace: the answer as text, and as JSON when it parses.
SAMPLE_FIELDS = ("output_text", "output_json")


@dataclass(frozen=True)
class Sample:
    """The ``sample`` namespace of one model answer."""

    output_text: str
    output_json: Any = None  # set only when output_text is valid JSON
    has_json: bool = False

    @classmethod
    def from_text(cls, text: str) -> Sample:
        # OpenAI: "output_json will be populated if the model sample is a valid JSON string".
        try:
            parsed = json.loads(text)
        except ValueError:
            return cls(output_text=text)
        return cls(output_text=text, output_json=parsed, has_json=True)

    def as_dict(self) -> dict[str, Any]:
        """What a python grader receives as ``sample``."""
        return {"output_text": self.output_text, "output_json": self.output_json}


@dataclass(frozen=True)
class Where:
    """Where a template sits: its grader path (``graders.correct.reference``) and the request root."""

    path: str
    root: str = "grader"

    @property
    def param(self) -> str:
        return f"{self.root}.{self.path}" if self.root else self.path

    def child(self, key: str) -> Where:
        return Where(f"{self.path}.{key}" if self.path else key, self.root)


def _parse_variable(raw: str, where: Where) -> tuple[str, list[str | int]]:
    text = raw.strip()
    namespace, _, rest = text.partition(".")
    if namespace not in ("item", "sample") or not rest:
        raise InvalidRequest(
            f"Template variable '{{{{{text}}}}}' in {where.path} must be item.<field> or "
            f"sample.<field> (OpenAI's namespaces).",
            param=where.param,
            code="invalid_template",
        )
    steps: list[str | int] = []
    position = 0
    for match in _STEP.finditer(rest):
        between = rest[position : match.start()]
        if between not in ("", "."):
            break
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    if position != len(rest) or not steps:
        raise InvalidRequest(
            f"Template variable '{{{{{text}}}}}' in {where.path} is not a dotted path.",
            param=where.param,
            code="invalid_template",
        )
    if namespace == "sample" and steps[0] not in SAMPLE_FIELDS:
        raise Unprocessable(
            f"Template variable '{{{{{text}}}}}' in {where.path}: Tuneline fills "
            f"{', '.join('sample.' + f for f in SAMPLE_FIELDS)} only (a sample here is one text answer).",
            param=where.param,
            code="unsupported_template_variable",
        )
    return namespace, steps


def check(template: str, where: Where) -> None:
    """Raise InvalidRequest naming ``where`` when a variable in ``template`` is malformed."""
    for match in VARIABLE.finditer(template):
        _parse_variable(match.group(1), where)


def _lookup(value: Any, steps: list[str | int]) -> tuple[bool, Any]:
    for step in steps:
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        in_dict = isinstance(step, str) and isinstance(value, dict) and step in value
        if not (in_list or in_dict):
            return False, None
        value = value[step]
    return True, value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def resolve(raw: str, item: Any, sample: Sample, where: Where) -> Any:
    """The value of one variable (``item.answer``), or an Unprocessable naming ``where``."""
    namespace, steps = _parse_variable(raw, where)
    name = raw.strip()
    if namespace == "sample" and steps[0] == "output_json":
        if not sample.has_json:
            raise Unprocessable(
                f"{where.path} uses '{{{{{name}}}}}' but the sample is not valid JSON.",
                param=where.param,
                code="invalid_variable",
            )
        found, value = _lookup(sample.output_json, steps[1:])
    elif namespace == "sample":
        found, value = _lookup(sample.output_text, steps[1:])
    else:
        found, value = _lookup(item, steps)
    if not found:
        raise Unprocessable(
            f"{where.path} uses '{{{{{name}}}}}', which the {namespace} does not have.",
            param=where.param,
            code="invalid_variable",
        )
    return value


def missing_item_variables(template: str, item: Any, where: Where) -> list[str]:
    """The ``item.*`` variables of ``template`` that ``item`` lacks (``item.answer``), in order.

    What a dataset row can be checked for before any answer exists; ``sample.*`` variables are
    filled by the model's answers and are not looked at.
    """
    missing: list[str] = []
    for match in VARIABLE.finditer(template):
        namespace, steps = _parse_variable(match.group(1), where)
        name = match.group(1).strip()
        if namespace == "item" and not _lookup(item, steps)[0] and name not in missing:
            missing.append(name)
    return missing


def render(template: str, item: Any, sample: Sample, where: Where) -> str:
    """``template`` with every ``{{ namespace.path }}`` replaced by its value."""
    return VARIABLE.sub(lambda m: _as_text(resolve(m.group(1), item, sample, where)), template)
